import sys

from diffguard.cli import main

sys.exit(main())
