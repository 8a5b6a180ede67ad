"""Checks before a run starts: the results folder can be written and its disk has some room left."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from diffguard.run.store import StoreError

# Refuse to start below this much free space on the results folder's disk (a run writes per-batch results).
MIN_FREE_BYTES = 50 * 1024 * 1024


class PreflightError(StoreError):
    """The results folder cannot take a run; the message names the folder and what to do."""


def preflight(folder: str | os.PathLike[str], min_free: int = MIN_FREE_BYTES) -> Path:
    """Create ``folder`` if needed and check that it is writable with at least ``min_free`` bytes free.

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        PreflightError: the path is a file, cannot be created or written, or its disk is (nearly) full.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PreflightError(f"results folder {folder} is an existing file, not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PreflightError(f"cannot create results folder {folder}: {err.strerror or err}; "
                             "choose another --out") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PreflightError(f"results folder {folder} is not writable; fix its permissions or choose another --out")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PreflightError(f"cannot write into results folder {folder}: {err.strerror or err}; "
                             "fix its permissions or choose another --out") from None
    free = shutil.disk_usage(folder).free
    if free < min_free:
        raise PreflightError(f"only {free / 2**20:.1f} MiB free on the disk of results folder {folder} (need at "
                             f"least {min_free / 2**20:.0f} MiB); free some space or choose another --out")
    return folder
