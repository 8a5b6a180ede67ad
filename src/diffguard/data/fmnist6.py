"""The embedded open-set benchmark **fmnist6**, built from Fashion-MNIST with no download.

Definition (fixed; do not tune it):

* in-distribution (known) classes: Fashion-MNIST 0-5 (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal), kept as
  labels 0..5;
* ``train``: known-class training images minus ``val``; ``val``: a seeded, class-stratified hold-out of
  :data:`VAL_PER_CLASS` known-class training images per class (for thresholds and fusion, never for training);
* ``test``: known-class test images (6000);
* near-OOD ``near-fmnist``: test images of classes 6-9 (Shirt, Sneaker, Bag, Ankle boot), 4000, label -1;
* far-OOD ``far-digits``: scikit-learn's bundled 8x8 handwritten digits (1797) resized bilinearly to 28x28;
  ``far-gaussian`` and ``far-uniform``: :data:`NOISE_COUNT` noise images each, from fixed seeds.

All images are float32 (N, 1, 28, 28) in [-1, 1] (background -1). OOD labels are -1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from diffguard.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

KNOWN_CLASSES = (0, 1, 2, 3, 4, 5)
UNKNOWN_CLASSES = (6, 7, 8, 9)
KNOWN_NAMES = tuple(CLASS_NAMES[c] for c in KNOWN_CLASSES)
NUM_CLASSES = len(KNOWN_CLASSES)
RESOLUTION = 28
VAL_PER_CLASS = 500
SPLIT_SEED = 0
NOISE_COUNT = 1000
NOISE_SEEDS = {"far-gaussian": 1, "far-uniform": 2}
GAUSSIAN_STD = 0.5
OOD_LABEL = -1

Role = Literal["train", "val", "id", "near", "far"]
SET_NAMES = ("train", "val", "test", "near-fmnist", "far-digits", "far-gaussian", "far-uniform")


@dataclass(frozen=True)
class ImageSet:
    """A named set of images. images: float32 (N, 1, 28, 28) in [-1, 1]; labels: int64 (N,), -1 for OOD;
    ids: int64 (N,), the index of each image in its source (stable across runs)."""

    name: str
    role: Role
    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _to_unit(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) in [0, 255] -> float32 (N, 1, 28, 28) in [-1, 1]."""
    return torch.from_numpy(images_u8.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)


def split_train_val(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into the official train split) of fmnist6 ``train`` and ``val``, both sorted; disjoint.

    ``val`` takes :data:`VAL_PER_CLASS` images of each known class with a generator seeded by :data:`SPLIT_SEED`.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    val = []
    for c in KNOWN_CLASSES:
        idx = np.flatnonzero(labels == c)
        val.append(rng.choice(idx, size=VAL_PER_CLASS, replace=False))
    val_idx = np.sort(np.concatenate(val))
    known = np.flatnonzero(np.isin(labels, KNOWN_CLASSES))
    train_idx = np.setdiff1d(known, val_idx)
    return train_idx, val_idx


def _subset(name: str, role: Role, images_u8: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> ImageSet:
    lab = torch.from_numpy(labels[idx]) if role in ("train", "val", "id") else torch.full((len(idx),), OOD_LABEL)
    return ImageSet(name, role, _to_unit(images_u8[idx]), lab.long(), torch.from_numpy(idx).long())


def digits_set() -> ImageSet:
    """scikit-learn's bundled digits (8x8, values 0..16) resized to 28x28, in [-1, 1]."""
    from sklearn.datasets import load_digits

    img = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0).unsqueeze(1)
    img = F.interpolate(img, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    img = (img * 2.0 - 1.0).clamp(-1.0, 1.0)
    n = img.shape[0]
    return ImageSet("far-digits", "far", img, torch.full((n,), OOD_LABEL), torch.arange(n))


def noise_set(name: Literal["far-gaussian", "far-uniform"], count: int = NOISE_COUNT) -> ImageSet:
    """Noise images from a fixed seed: Gaussian N(0, 0.5^2) clipped to [-1, 1], or uniform on [-1, 1]."""
    gen = torch.Generator().manual_seed(NOISE_SEEDS[name])
    shape = (count, 1, RESOLUTION, RESOLUTION)
    if name == "far-gaussian":
        img = (torch.randn(shape, generator=gen) * GAUSSIAN_STD).clamp(-1.0, 1.0)
    else:
        img = torch.rand(shape, generator=gen) * 2.0 - 1.0
    return ImageSet(name, "far", img, torch.full((count,), OOD_LABEL), torch.arange(count))


def load_fmnist6(
    sets: tuple[str, ...] = SET_NAMES, data_root: str | os.PathLike[str] | None = None
) -> dict[str, ImageSet]:
    """Build the requested fmnist6 sets (names from :data:`SET_NAMES`), reading the IDX files once per split."""
    unknown = [s for s in sets if s not in SET_NAMES]
    if unknown:
        raise ValueError(f"unknown fmnist6 set(s) {unknown}; choose from {list(SET_NAMES)}")
    out: dict[str, ImageSet] = {}
    if {"train", "val"} & set(sets):
        tr = load_fashion_mnist("train", data_root)
        train_idx, val_idx = split_train_val(tr.labels)
        if "train" in sets:
            out["train"] = _subset("train", "train", tr.images, tr.labels, train_idx)
        if "val" in sets:
            out["val"] = _subset("val", "val", tr.images, tr.labels, val_idx)
    if {"test", "near-fmnist"} & set(sets):
        te = load_fashion_mnist("test", data_root)
        if "test" in sets:
            out["test"] = _subset("test", "id", te.images, te.labels, np.flatnonzero(te.labels < NUM_CLASSES))
        if "near-fmnist" in sets:
            out["near-fmnist"] = _subset(
                "near-fmnist", "near", te.images, te.labels, np.flatnonzero(te.labels >= NUM_CLASSES)
            )
    if "far-digits" in sets:
        out["far-digits"] = digits_set()
    for name in ("far-gaussian", "far-uniform"):
        if name in sets:
            out[name] = noise_set(name)  # type: ignore[arg-type]
    return {s: out[s] for s in sets}
