"""Fashion-MNIST from local IDX files (Debian's ``dataset-fashion-mnist`` or any folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffguard.data.idx import IdxError, read_idx
from diffguard.errors import UserError

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "DIFFGUARD_DATA_ROOT"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}


class DataNotFoundError(UserError, FileNotFoundError):
    """The Fashion-MNIST files are not where we looked; the message says how to provide them."""


def resolve_root(data_root: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding the IDX files: the argument, else ``$DIFFGUARD_DATA_ROOT``, else the Debian location."""
    if data_root is not None:
        return Path(data_root)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEBIAN_ROOT


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}. Install Debian's package "
        f"'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist), or pass --data-root / set "
        f"{ENV_VAR} to a folder holding the four IDX files."
    )


@dataclass(frozen=True)
class FashionMNISTSplit:
    """One official split. images: uint8 (N, 28, 28) in [0, 255]; labels: int64 (N,) in [0, 9]."""

    images: np.ndarray
    labels: np.ndarray


def load_fashion_mnist(split: str, data_root: str | os.PathLike[str] | None = None) -> FashionMNISTSplit:
    """Load the official ``"train"`` (60000) or ``"test"`` (10000) split, validating counts and shapes."""
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use one of {sorted(_FILES)}")
    root = resolve_root(data_root)
    img_stem, lab_stem, count = _FILES[split]
    img_path, lab_path = _find(root, img_stem), _find(root, lab_stem)
    images = read_idx(img_path, expect_ndim=3)
    labels = read_idx(lab_path, expect_ndim=1)
    if images.shape != (count, 28, 28):
        raise IdxError(f"{img_path}: shape {images.shape}, expected ({count}, 28, 28) for the {split} split")
    if labels.shape != (count,):
        raise IdxError(f"{lab_path}: {labels.shape[0]} labels, expected {count} for the {split} split")
    if labels.max() > 9:
        raise IdxError(f"{lab_path}: label {int(labels.max())} out of range 0..9; the file is corrupt")
    return FashionMNISTSplit(images=images, labels=labels.astype(np.int64))
