"""Covariate-shifted in-distribution images: mild, seeded corruptions of ID images (OpenOOD v1.5's "csid").

A covariate-shifted copy keeps its class: the classifier still knows it, so an OOD detector should *not* flag it.
Each image gets one corruption, chosen with its parameters by a generator seeded with ``(seed, id)``, so an image's
corruption depends only on the set's seed and the image's stable id (not on batch, order or which other images are
corrupted with it):

=========  =====================================================================================================
kind       what it does (images in [-1, 1]; every result clamped to [-1, 1])
=========  =====================================================================================================
blur       Gaussian blur, sigma ~ U(0.5, 0.7) px, 7-tap separable kernel, border replicated
noise      additive Gaussian noise, std ~ U(0.04, 0.07) (in [-1, 1] units, i.e. 2-3.5 % of the range), clamped
shift      translation by (dy, dx), max(|dy|, |dx|) in {1, 2} px (one of the 24 offsets), background -1 fills in
contrast   x' = -1 + c (x + 1), c ~ U(0.7, 0.9): the ink is dimmed, the background (-1) kept
jpeg       JPEG round trip through Pillow at quality ~ U{40, ..., 60}
=========  =====================================================================================================

The kind is drawn uniformly (each about a fifth of a set). The ranges are kept mild on purpose: a classifier
trained without augmentation must still know the images (see :mod:`diffguard.data.fmnist6` for the shipped
classifier's accuracy). Contrast is anchored at the background rather than at the image mean (Pillow's
``ImageEnhance.Contrast``): on dark-background images a mean anchor lifts the background, and the shipped fmnist6
classifier loses 20-35 points of accuracy at c = 0.6-0.8 that way, so such copies would no longer be "known".
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

CORRUPTIONS = ("blur", "noise", "shift", "contrast", "jpeg")
BLUR_SIGMA = (0.5, 0.7)
NOISE_STD = (0.04, 0.07)
CONTRAST = (0.7, 0.9)
JPEG_QUALITY = (40, 60)
_OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]


def _blur_matrix(length: int, sigma: torch.Tensor, radius: int, mode: str) -> torch.Tensor:
    """(n, L, L) matrices applying a 1-D Gaussian blur (one sigma per row of ``sigma`` (n, 1)) along a side of
    length L, the padded border folded in: row p holds the kernel weights of the pixels output p reads."""
    t = torch.arange(-radius, radius + 1)
    k = torch.exp(-0.5 * (t.to(sigma.dtype) / sigma) ** 2)
    k = k / k.sum(1, keepdim=True)  # (n, taps)
    src = torch.arange(length)[:, None] + t[None, :]  # (L, taps): the index each tap reads, before padding
    if mode == "replicate":
        src = src.clamp(0, length - 1)
    elif mode == "reflect":
        src = src.abs()
        src = torch.where(src > length - 1, 2 * (length - 1) - src, src)
    else:
        raise ValueError(f"gaussian_blur: mode must be 'replicate' or 'reflect', got {mode!r}")
    n = k.shape[0]
    m = torch.zeros(n, length, length, dtype=sigma.dtype)
    return m.scatter_add_(2, src.expand(n, -1, -1), k[:, None, :].expand(n, length, -1).contiguous())


def gaussian_blur(x: torch.Tensor, sigma: float | torch.Tensor, radius: int = 3,
                  mode: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) (any float dtype) with a (2 ``radius`` + 1)-tap kernel, as two
    batched matrix products (cheap for small images, one sigma per image allowed).

    Args:
        sigma: one value, or (N,) one per image.
        mode: how the border is padded: "replicate" (edge pixels repeated) or "reflect" (mirrored, edge not
            repeated, as ``F.pad``); ``radius`` must be below H and W for "reflect".
    """
    n, _, h, w = x.shape
    sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1).expand(n, 1)
    rows = _blur_matrix(h, sig, radius, mode)
    cols = rows if w == h else _blur_matrix(w, sig, radius, mode)
    return rows[:, None] @ x @ cols[:, None].transpose(-1, -2)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate (..., H, W) by (dy, dx) pixels; uncovered pixels take the background value -1."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, -1.0)
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _jpeg(x: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """JPEG round trip (Pillow) of (n, 1 or 3, H, W) images in [-1, 1], image i at ``qualities[i]``."""

    u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    mode = "L" if u8.shape[3] == 1 else "RGB"
    out = np.empty(u8.shape, dtype=np.float32)
    for i, q in enumerate(qualities):
        buf = io.BytesIO()
        Image.fromarray(u8[i, ..., 0] if mode == "L" else u8[i], mode).save(buf, format="JPEG", quality=int(q))
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(mode), dtype=np.float32)
        out[i] = back[..., None] if back.ndim == 2 else back
    return torch.from_numpy(out / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class Draw:
    """One image's corruption: ``kind`` (from :data:`CORRUPTIONS`) and its parameter (blur sigma, noise field
    (C, H, W) already scaled by its std, shift offset (dy, dx), contrast factor, JPEG quality)."""

    kind: str
    param: object


def draw(rng: np.random.Generator, shape: tuple[int, int, int]) -> Draw:
    """Draw one corruption for an image of ``shape`` (C, H, W) from ``rng``."""
    kind = CORRUPTIONS[int(rng.integers(len(CORRUPTIONS)))]
    if kind == "blur":
        return Draw(kind, float(rng.uniform(*BLUR_SIGMA)))
    if kind == "noise":
        std = float(rng.uniform(*NOISE_STD))
        return Draw(kind, rng.standard_normal(shape).astype(np.float32) * np.float32(std))
    if kind == "shift":
        return Draw(kind, _OFFSETS[int(rng.integers(len(_OFFSETS)))])
    if kind == "contrast":
        return Draw(kind, float(rng.uniform(*CONTRAST)))
    return Draw(kind, int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))


def apply(x: torch.Tensor, kind: str, params: list) -> torch.Tensor:
    """Apply one kind of corruption to (n, C, H, W) images in [-1, 1] with one parameter per image (unclamped)."""
    if kind == "blur":
        return gaussian_blur(x, torch.tensor(params, dtype=x.dtype))
    if kind == "noise":
        return x + torch.from_numpy(np.stack(params))
    if kind == "shift":
        return torch.stack([_shift(xi, *p) for xi, p in zip(x, params)])
    if kind == "contrast":
        return torch.tensor(params, dtype=x.dtype).view(-1, 1, 1, 1) * (x + 1.0) - 1.0
    return _jpeg(x, params)


def corrupt(images: torch.Tensor, ids: Sequence[int] | torch.Tensor, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Covariate-shifted copies of ``images``.

    Args:
        images: float (N, C, H, W) in [-1, 1], C = 1 or 3.
        ids: (N,) the stable id of each image (>= 0); image i's corruption is drawn by a generator seeded with
            ``(seed, ids[i])``, so it does not depend on the other images.
        seed: the set's seed (give each corrupted set its own).
    Returns:
        (float32 (N, C, H, W) in [-1, 1], the kind of each image, names from :data:`CORRUPTIONS`).
    """
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    if len(ids) != images.shape[0]:
        raise ValueError(f"corrupt: {images.shape[0]} images but {len(ids)} ids")
    shape = tuple(images.shape[1:])
    draws = [draw(np.random.default_rng([seed, sid]), shape) for sid in ids]  # type: ignore[arg-type]
    out = images.float().clone()
    for kind in CORRUPTIONS:
        rows = [i for i, d in enumerate(draws) if d.kind == kind]
        if rows:
            out[rows] = apply(out[rows], kind, [draws[i].param for i in rows])
    return out.clamp_(-1.0, 1.0), [d.kind for d in draws]
