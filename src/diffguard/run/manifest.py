"""Run manifests: versions, configuration, seeds, model and data hashes, machine, command line.

Written beside every run's results (``manifest.json``) and kept in the results store.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from diffguard.model_files import ModelFileError, shipped_path
from diffguard.specs.model_specs import spec_files
from diffguard.sysinfo import command_line, machine
from diffguard.version import __version__


def sha256_files(paths: Iterable[Path]) -> str:
    """One SHA-256 over the given files' names and bytes (sorted by path), streamed."""
    h = hashlib.sha256()
    for p in sorted(Path(q) for q in paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def folder_hash(folder: Path, patterns: tuple[str, ...] = ("*.safetensors", "*.json")) -> str:
    """Hash of a model folder's weight and config files (recursively)."""
    files = [p for pat in patterns for p in Path(folder).rglob(pat) if p.name != "MODEL_CARD.md"]
    if not files:
        raise FileNotFoundError(f"no model files under {folder}")
    return sha256_files(files)


def path_hash(path: Path) -> str:
    """:func:`folder_hash` of a folder, :func:`sha256_files` of a single file."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model path {path} does not exist: check the classifier / diffusion entries of the "
                             "config (or --set classifier=... / diffusion=...)")
    return folder_hash(path) if path.is_dir() else sha256_files([path])


def versions() -> dict[str, str]:
    out = {"diffguard": __version__, "python": sys.version.split()[0],
           "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform()}
    for mod in ("diffusers", "piq", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages: record absence
            out[mod] = "absent"
    return out


def build_manifest(config: dict[str, Any], models: dict[str, Path | None], data_files: Iterable[Path] = (),
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest dict. ``models``: name -> folder (None = not used)."""

    return {"config": config, "versions": versions(), "machine": machine(), "command": command_line(),
            "models": {k: (folder_hash(v) if v is not None else None) for k, v in models.items()},
            "data": sha256_files(data_files) if data_files else None, **(extra or {})}


def model_hashes(cfg: Any) -> dict[str, list[str]]:
    """Hashes of the classifier's and the diffusion model's files of a run config (what a results folder is
    calibrated with)."""

    return {kind: [path_hash(p) for p in spec_files(getattr(cfg, kind), shipped_path(kind))]
            for kind in ("classifier", "diffusion")}
