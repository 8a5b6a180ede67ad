"""Machine description recorded beside every measured figure."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import torch


def machine() -> str:
    """CPU (or GPU) model, thread count and torch version, e.g. 'AMD EPYC, 2 torch threads, torch 2.14.1'."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} torch threads{gpu}, torch {torch.__version__}"


def command_line() -> str:
    """The command that is running, as a user would type it."""
    prog = Path(sys.argv[0]).name
    return " ".join(["diffguard" if prog in ("diffguard", "__main__.py") else prog, *sys.argv[1:]])
