"""The ``diffguard`` command line, one module per command: ``benchmark``, the evaluation commands
(``score``, ``report``, ``seeds``), ``train classifier|diffusion`` and ``models check|members``.

Errors caused by user input (:class:`diffguard.errors.UserError`) are printed as one line and exit with status 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
import logging
import os
from diffguard.errors import UserError

COMMANDS = ("benchmark", "export", "score", "report", "seeds", "train", "models", "tune", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffguard",
        description="DiffGuard: semantic-mismatch OOD detection with pre-trained diffusion models. "
                    "Run `diffguard COMMAND --help` for a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"diffguard.cli.{name}_cmd").add(sub)
    return parser


def quiet_library_warnings() -> None:
    """Silence library messages that say nothing to a diffguard user (e.g. diffusers asking for accelerate)."""

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*accelerate.*")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    quiet_library_warnings()
    try:
        return args.run(args)
    except UserError as err:
        print(f"diffguard: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
