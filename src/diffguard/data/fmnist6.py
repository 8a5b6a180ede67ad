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

Validation and covariate-shift sets (never used for training; both models train on ``train`` only):

* OOD validation (role ``val_ood``, label -1), for choosing methods and settings without touching a test set:
  ``val-ood``: a class-stratified hold-out of :data:`VAL_OOD_PER_CLASS` Fashion-MNIST *training* images of each
  unknown class 6-9 (2000), drawn with seed 0 on its own stream (:data:`VAL_OOD_SEED`), disjoint from every test
  set (other split) and from ``train`` / ``val`` (other classes); ``val-far``: :data:`VAL_FAR_COUNT` synthetic
  images from seed :data:`VAL_FAR_SEED` (no source or seed shared with a far-OOD test set), by ``id % 3``:
  sinusoidal stripes (random orientation, period 3-10 px, phase, amplitude 0.6-1), smoothed noise (white noise
  blurred with sigma 1-2.5 px, stretched to [-1, 1]) and 1-4 bright Gaussian blobs (sigma 2-5 px) on the -1
  background;
* covariate-shifted ID (labels = the true class): ``val-csid`` (role ``val_csid``, validation: every ``val``
  image) and ``test-csid`` (role ``csid``, test data: every ``test`` image), each image with one mild corruption
  (blur, noise, 1-2 px shift, contrast, JPEG; recipe in :mod:`diffguard.data.corruptions`), seeds
  :data:`CSID_SEEDS`. Ids are the source image's. The shipped classifier keeps most of its accuracy (it never saw
  corrupted images): ``test`` 96.28 %, ``test-csid`` 94.42 % (per kind: blur 94.57, noise 93.84, shift 96.22,
  contrast 95.42, JPEG 91.89 %); ``val`` 96.97 %, ``val-csid`` 95.20 %;
* covariate shift by kind and severity: ``<val|test>-csid-<kind>-<severity>`` (:data:`CSID_KIND_SETS`), kind in
  blur, noise, shift, contrast, jpeg, severity 1 (the mixed sets' mild range), 2 or 3 (stronger; ranges in
  :data:`diffguard.data.corruptions.SEVERITIES`), every image with that one kind. ``test-csid-*`` (role ``csid``,
  test data): the same :data:`CSID_KIND_SIZES` ``["test"]`` = 1000 ``test`` images in each (15,000 in all), a seeded
  class-stratified draw (:func:`stratified_rows`, seed :data:`CSID_SUBSET_SEEDS`), so the kinds and severities are
  comparable image for image; ``val-csid-*`` (role ``val_csid``): likewise 500 ``val`` images each (7,500). Each
  set has its own seed (:data:`CSID_SEEDS`: 100 for val, 200 for test, + 10 x (kind's place in ``CORRUPTIONS``,
  1-5) + severity), and an image's parameter is drawn from ``(seed, id)`` as above. The shipped classifier's
  accuracy (%, ``val-csid-<kind>-<sev>`` / ``test-csid-<kind>-<sev>``; clean ``val`` 96.97, ``test`` 96.28) stays
  far above chance (16.7 %) at every severity, 78.2 % or more at severity 3:

  ========  ===============  ===============  ===============
  kind      severity 1       severity 2       severity 3
  ========  ===============  ===============  ===============
  blur      95.00 / 94.60    91.80 / 89.70    80.00 / 78.20
  noise     94.40 / 93.30    91.00 / 89.40    85.00 / 83.60
  shift     97.00 / 95.60    97.20 / 96.10    96.40 / 93.40
  contrast  94.40 / 95.30    92.00 / 92.30    88.80 / 89.00
  jpeg      94.40 / 93.90    93.00 / 93.00    90.00 / 87.70
  ========  ===============  ===============  ===============

Reproduce every accuracy with ``python scripts/fmnist6_csid_accuracy.py`` (CPU, about a CPU-minute).

All images are float32 (N, 1, 28, 28) in [-1, 1] (background -1). OOD labels are -1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from diffguard.data.corruptions import CORRUPTIONS, SEVERITY_LEVELS, corrupt, corrupt_kind, gaussian_blur
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
VAL_FAR_KINDS = ("stripes", "smoothed noise", "blobs")  # val-far image i is of kind VAL_FAR_KINDS[i % 3]
OOD_LABEL = -1
VAL_OOD_PER_CLASS = 500
VAL_OOD_SEED = (SPLIT_SEED, 1)  # seed 0, stream 1: independent of the ``val`` draw (seed 0, default stream)
VAL_FAR_COUNT = 1000
VAL_FAR_SEED = 3  # the far-OOD test noise uses torch generators seeded 1 and 2
CSID_KIND_SIZES = {"val": 500, "test": 1000}  # images per per-kind set, the same ones for every kind and severity
CSID_SUBSET_SEEDS = {"val": 6, "test": 7}
CSID_SEED_BASE = {"val": 100, "test": 200}


def csid_kind_name(split: str, kind: str, severity: int) -> str:
    """The name of a per-kind covariate-shift set, ``<split>-csid-<kind>-<severity>``."""
    return f"{split}-csid-{kind}-{severity}"


CSID_KIND_SETS: dict[str, tuple[str, str, int]] = {
    csid_kind_name(split, kind, sev): (split, kind, sev)
    for split in ("val", "test") for kind in CORRUPTIONS for sev in SEVERITY_LEVELS}
"""Per-kind covariate-shift set -> (clean set it copies, corruption kind, severity)."""
CSID_SEEDS = {"val-csid": 4, "test-csid": 5, **{
    n: CSID_SEED_BASE[split] + 10 * (CORRUPTIONS.index(kind) + 1) + sev
    for n, (split, kind, sev) in CSID_KIND_SETS.items()}}

Role = Literal["train", "val", "val_ood", "val_csid", "id", "csid", "near", "far"]
CORE_SET_NAMES = ("train", "val", "test", "near-fmnist", "far-digits", "far-gaussian", "far-uniform",
                  "val-ood", "val-far", "val-csid", "test-csid")
"""Every set but the per-kind covariate-shift sets (what :func:`load_fmnist6` builds by default)."""
SET_NAMES = CORE_SET_NAMES + tuple(CSID_KIND_SETS)
_KIND_ROLES: dict[str, Role] = {"val": "val_csid", "test": "csid"}  # per-kind sets: validation / test by source
ROLES: dict[str, Role] = {"train": "train", "val": "val", "test": "id", "near-fmnist": "near", "far-digits": "far",
                          "far-gaussian": "far", "far-uniform": "far", "val-ood": "val_ood", "val-far": "val_ood",
                          "val-csid": "val_csid", "test-csid": "csid",
                          **{n: _KIND_ROLES[v[0]] for n, v in CSID_KIND_SETS.items()}}
_FROM_TRAIN = {"train", "val", "val-ood", "val-csid", *(n for n, v in CSID_KIND_SETS.items() if v[0] == "val")}
_FROM_TEST = {"test", "near-fmnist", "test-csid", *(n for n, v in CSID_KIND_SETS.items() if v[0] == "test")}


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


def split_val_ood(labels: np.ndarray) -> np.ndarray:
    """Sorted indices (into the official train split) of ``val-ood``: :data:`VAL_OOD_PER_CLASS` images of each
    unknown class, drawn with a generator seeded by :data:`VAL_OOD_SEED`."""
    rng = np.random.default_rng(list(VAL_OOD_SEED))
    picks = [rng.choice(np.flatnonzero(labels == c), size=VAL_OOD_PER_CLASS, replace=False) for c in UNKNOWN_CLASSES]
    return np.sort(np.concatenate(picks))


def _subset(name: str, images_u8: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> ImageSet:
    role = ROLES[name]
    lab = torch.full((len(idx),), OOD_LABEL) if role in ("val_ood", "near", "far") else torch.from_numpy(labels[idx])
    return ImageSet(name, role, _to_unit(images_u8[idx]), lab.long(), torch.from_numpy(idx).long())


def digits_set() -> ImageSet:
    """scikit-learn's bundled digits (8x8, values 0..16) resized to 28x28, in [-1, 1]."""

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


def csid_set(name: Literal["val-csid", "test-csid"], clean: ImageSet) -> ImageSet:
    """Every image of ``clean`` (``val`` or ``test``) with one mild corruption seeded by (CSID_SEEDS[name], id);
    labels and ids are the clean set's; role ``val_csid`` (validation) or ``csid`` (test), as in :data:`ROLES`."""
    images, _ = corrupt(clean.images, clean.ids, CSID_SEEDS[name])
    return ImageSet(name, ROLES[name], images, clean.labels.clone(), clean.ids.clone())


def stratified_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded, class-stratified draw of ``count`` of ``labels``' rows: each class gets its
    share of ``count`` (largest remainder first, ties to the lower class), drawn without replacement, class by
    class, by a generator seeded with ``seed``."""
    classes, sizes = np.unique(labels, return_counts=True)
    if count > len(labels):
        raise ValueError(f"stratified_rows: {count} rows asked from {len(labels)}")
    share = count * sizes / sizes.sum()
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share, kind="stable")[: count - int(quota.sum())]] += 1
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))


def csid_kind_set(name: str, clean: ImageSet) -> ImageSet:
    """The per-kind covariate-shift set ``name`` (from :data:`CSID_KIND_SETS`) made from ``clean`` (``val`` or
    ``test``): its :data:`CSID_KIND_SIZES` stratified rows (the same for every kind and severity), each corrupted
    with the set's kind at its severity, seeded by (CSID_SEEDS[name], id); labels and ids are the clean images'."""
    split, kind, severity = CSID_KIND_SETS[name]
    if clean.name != split:
        raise ValueError(f"{name} is made from {split!r}, got {clean.name!r}")
    rows = torch.from_numpy(stratified_rows(clean.labels.numpy(), CSID_KIND_SIZES[split], CSID_SUBSET_SEEDS[split]))
    images = corrupt_kind(clean.images[rows], clean.ids[rows], CSID_SEEDS[name], kind, severity)
    return ImageSet(name, ROLES[name], images, clean.labels[rows].clone(), clean.ids[rows].clone())


def _shifted(want: set[str], clean: ImageSet) -> dict[str, ImageSet]:
    """The wanted covariate-shifted copies of ``clean`` (``val`` or ``test``): the mixed set, the per-kind sets."""
    mixed = f"{clean.name}-csid"
    out = {mixed: csid_set(mixed, clean)} if mixed in want else {}  # type: ignore[arg-type]
    out.update({n: csid_kind_set(n, clean) for n, v in CSID_KIND_SETS.items() if n in want and v[0] == clean.name})
    return out


def val_far_set(count: int = VAL_FAR_COUNT) -> ImageSet:
    """Synthetic far-OOD validation images in [-1, 1], kind ``VAL_FAR_KINDS[id % 3]``: stripes, smoothed noise,
    bright blobs."""
    rng = np.random.default_rng(VAL_FAR_SEED)
    yy, xx = np.mgrid[0:RESOLUTION, 0:RESOLUTION].astype(np.float64)
    out = np.empty((count, RESOLUTION, RESOLUTION), dtype=np.float64)
    noise: dict[float, list[tuple[int, np.ndarray]]] = {}  # sigma -> (index, white noise), blurred below
    for i in range(count):
        if i % 3 == 0:  # stripes: a sinusoidal grating
            angle, period, phase = rng.uniform(0, np.pi), rng.uniform(3, 10), rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
            out[i] = rng.uniform(0.6, 1.0) * wave
        elif i % 3 == 1:  # smoothed noise (sigma 1, 1.5, 2 or 2.5 px)
            white = rng.standard_normal((RESOLUTION, RESOLUTION))
            noise.setdefault(1.0 + 0.5 * int(rng.integers(0, 4)), []).append((i, white))
        else:  # 1-4 bright Gaussian blobs on the background
            img = np.zeros((RESOLUTION, RESOLUTION))
            for _ in range(int(rng.integers(1, 5))):
                cy, cx = rng.uniform(4, RESOLUTION - 4, size=2)
                sig = rng.uniform(2, 5)
                img = np.maximum(img, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig ** 2)))
            out[i] = 2 * img - 1
    for sigma, items in noise.items():
        white = torch.from_numpy(np.stack([w for _, w in items])).unsqueeze(1)
        smooth = gaussian_blur(white, sigma, int(np.ceil(3 * sigma)), "reflect")[:, 0].numpy()
        lo, hi = smooth.min((1, 2), keepdims=True), smooth.max((1, 2), keepdims=True)
        out[[i for i, _ in items]] = 2 * (smooth - lo) / np.maximum(hi - lo, 1e-8) - 1  # stretched to [-1, 1]
    img = torch.from_numpy(out).float().clamp(-1.0, 1.0).unsqueeze(1)
    return ImageSet("val-far", "val_ood", img, torch.full((count,), OOD_LABEL), torch.arange(count))


def _from_train_split(want: set[str], tr: Any) -> dict[str, ImageSet]:
    """The wanted sets drawn from the official train split: train, val, val-ood, val-csid, val-csid-*."""
    train_idx, val_idx = split_train_val(tr.labels)
    picks = {"train": train_idx, "val": val_idx, **({"val-ood": split_val_ood(tr.labels)} if "val-ood" in want else {})}
    out = {n: _subset(n, tr.images, tr.labels, idx) for n, idx in picks.items() if n in want or n == "val"}
    out.update(_shifted(want, out["val"]))
    return {n: v for n, v in out.items() if n in want}


def _from_test_split(want: set[str], te: Any) -> dict[str, ImageSet]:
    """The wanted sets drawn from the official test split: test, near-fmnist, test-csid, test-csid-*."""
    out = {"test": _subset("test", te.images, te.labels, np.flatnonzero(te.labels < NUM_CLASSES))}
    if "near-fmnist" in want:
        out["near-fmnist"] = _subset("near-fmnist", te.images, te.labels, np.flatnonzero(te.labels >= NUM_CLASSES))
    out.update(_shifted(want, out["test"]))
    return {n: v for n, v in out.items() if n in want}


def load_fmnist6(
    sets: tuple[str, ...] = CORE_SET_NAMES, data_root: str | os.PathLike[str] | None = None
) -> dict[str, ImageSet]:
    """Build the requested fmnist6 sets (names from :data:`SET_NAMES`; default: :data:`CORE_SET_NAMES`, every set
    but the per-kind csid sets), reading the IDX files once per split and building nothing else."""
    unknown = [s for s in sets if s not in SET_NAMES]
    if unknown:
        raise ValueError(f"unknown fmnist6 set(s) {unknown}; choose from {list(CORE_SET_NAMES)} or "
                         f"<val|test>-csid-<kind>-<severity> (kind: {', '.join(CORRUPTIONS)}; severity "
                         f"{', '.join(map(str, SEVERITY_LEVELS))})")
    want, out = set(sets), {}
    if _FROM_TRAIN & want:
        out.update(_from_train_split(want, load_fashion_mnist("train", data_root)))
    if _FROM_TEST & want:
        out.update(_from_test_split(want, load_fashion_mnist("test", data_root)))
    if "far-digits" in want:
        out["far-digits"] = digits_set()
    for name in ("far-gaussian", "far-uniform"):
        if name in want:
            out[name] = noise_set(name)  # type: ignore[arg-type]
    if "val-far" in want:
        out["val-far"] = val_far_set()
    return {s: out[s] for s in sets}
