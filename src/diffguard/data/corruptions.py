"""Covariate-shifted in-distribution images: seeded corruptions of ID images (OpenOOD v1.5's "csid").

A covariate-shifted copy keeps its class: the classifier still knows it, so an OOD detector should *not* flag it.
Each image's corruption is chosen, with its parameters, by a generator seeded with ``(seed, id)``, so it depends only
on the set's seed and the image's stable id (not on batch, order or which other images are corrupted with it).

Two recipes. :func:`corrupt` (fmnist6's mixed ``val-csid`` / ``test-csid``) draws the kind uniformly (each about a
fifth of a set) and its parameter from the kind's severity-1 range. :func:`corrupt_kind` (the per-kind sets
``<val|test>-csid-<kind>-<severity>``) applies one kind at one severity to every image, the parameter drawn from that
severity's range. The ranges are :data:`SEVERITIES` (images in [-1, 1]; every result clamped to [-1, 1]):

=========  ==========================  =================  =================  ==================================
kind       parameter                   severity 1         severity 2         severity 3
=========  ==========================  =================  =================  ==================================
blur       Gaussian sigma (px)         U(0.5, 0.7)        U(0.75, 0.9)       U(1.0, 1.2)
noise      additive Gaussian std       U(0.04, 0.07)      U(0.08, 0.12)      U(0.14, 0.20)
shift      max(|dy|, |dx|) (px)        1 or 2             3                  4
contrast   ink factor c                U(0.7, 0.9)        U(0.5, 0.7)        U(0.35, 0.5)
jpeg       Pillow JPEG quality         U{40, ..., 60}     U{20, ..., 35}     U{8, ..., 15}
=========  ==========================  =================  =================  ==================================

* blur: separable Gaussian, border replicated, ``2 r + 1`` taps with r = max(3, ceil(3 sigma_max)) of the range
  (7 taps at severities 1-2, 9 at severity 3);
* noise: std in [-1, 1] units (severity 1: 2-3.5 % of the range, severity 3: 7-10 %), one field per image;
* shift: translation by (dy, dx), one of the offsets with max(|dy|, |dx|) in the range (24, 24 and 32 offsets),
  the background value -1 filling in;
* contrast: x' = -1 + c (x + 1): the ink is dimmed, the background (-1) kept;
* jpeg: a JPEG round trip through Pillow (8-bit grey).

Severity 1 is the mild recipe of the mixed sets, unchanged. Severities 2 and 3 are stronger but stay "known": each
keeps the garment recognisable to a person (a softer edge, visible grain, a 3-4 px move inside the 28 px frame,
dimmer ink, block artefacts), and the shipped classifier, trained without augmentation, keeps most of its accuracy:
at severity 3 between 78 % (blur) and 93 % (shift) on the test sets, against 96.3 % clean and 16.7 % chance (every
set in :mod:`diffguard.data.fmnist6`). Flagging such an image is a false alarm, not a catch. Blur is the kind the
classifier minds most, so its ranges stop at sigma 1.2 (a first severity 3 of sigma 1.1-1.4 left it at 71 %).
Contrast is anchored at the background rather than at the image mean (Pillow's ``ImageEnhance.Contrast``): on
dark-background images a mean anchor lifts the background, and the shipped fmnist6 classifier loses 20-35 points of
accuracy at c = 0.6-0.8 that way, so such copies would no longer be "known".
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

CORRUPTIONS = ("blur", "noise", "shift", "contrast", "jpeg")
SEVERITY_LEVELS = (1, 2, 3)
Range = tuple[float, float]
SEVERITIES: dict[str, tuple[Range, Range, Range]] = {
    # kind:      severity 1     severity 2     severity 3      parameter (see the module docstring)
    "blur":     ((0.5, 0.7),   (0.75, 0.9),  (1.0, 1.2)),    # Gaussian sigma, px
    "noise":    ((0.04, 0.07), (0.08, 0.12), (0.14, 0.20)),  # std, [-1, 1] units
    "shift":    ((1, 2),       (3, 3),       (4, 4)),        # max(|dy|, |dx|), whole px
    "contrast": ((0.7, 0.9),   (0.5, 0.7),   (0.35, 0.5)),   # ink factor c
    "jpeg":     ((40, 60),     (20, 35),     (8, 15)),       # quality, integers
}
"""Parameter range of each kind (rows) at severities 1, 2, 3; severity 1 is the mixed sets' recipe."""
BLUR_SIGMA, NOISE_STD, SHIFT_PX, CONTRAST, JPEG_QUALITY = (SEVERITIES[k][0] for k in
                                                           ("blur", "noise", "shift", "contrast", "jpeg"))


def severity_range(kind: str, severity: int) -> Range:
    """The parameter range of ``kind`` (from :data:`CORRUPTIONS`) at ``severity`` (1, 2 or 3)."""
    if kind not in SEVERITIES or severity not in SEVERITY_LEVELS:
        raise ValueError(f"no corruption {kind!r} at severity {severity!r}; kinds {CORRUPTIONS}, severities "
                         f"{SEVERITY_LEVELS}")
    return SEVERITIES[kind][severity - 1]


def shift_offsets(span: Range) -> list[tuple[int, int]]:
    """The offsets (dy, dx) with max(|dy|, |dx|) in ``span`` (whole pixels), row by row from (-hi, -hi)."""
    lo, hi = int(span[0]), int(span[1])
    return [(dy, dx) for dy in range(-hi, hi + 1) for dx in range(-hi, hi + 1) if max(abs(dy), abs(dx)) >= lo]


def blur_radius(span: Range) -> int:
    """Kernel radius for blurs with sigma in ``span``: max(3, ceil(3 sigma_max)) (3 for the mild range)."""
    return max(3, int(np.ceil(3 * span[1] - 1e-9)))


_OFFSETS = {k: shift_offsets(r) for k, r in enumerate(SEVERITIES["shift"], start=1)}


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


def draw_param(rng: np.random.Generator, kind: str, severity: int, shape: tuple[int, int, int]) -> Draw:
    """Draw the parameter of one ``kind`` of corruption at ``severity`` for an image of ``shape`` (C, H, W)."""
    lo, hi = severity_range(kind, severity)
    if kind == "blur":
        return Draw(kind, float(rng.uniform(lo, hi)))
    if kind == "noise":
        std = float(rng.uniform(lo, hi))
        return Draw(kind, rng.standard_normal(shape).astype(np.float32) * np.float32(std))
    if kind == "shift":
        offsets = _OFFSETS[severity]
        return Draw(kind, offsets[int(rng.integers(len(offsets)))])
    if kind == "contrast":
        return Draw(kind, float(rng.uniform(lo, hi)))
    return Draw(kind, int(rng.integers(int(lo), int(hi) + 1)))


def draw(rng: np.random.Generator, shape: tuple[int, int, int]) -> Draw:
    """Draw one corruption of the mixed recipe for an image of ``shape`` (C, H, W) from ``rng``: a kind, uniformly,
    then its severity-1 parameter."""
    kind = CORRUPTIONS[int(rng.integers(len(CORRUPTIONS)))]
    return draw_param(rng, kind, 1, shape)


def apply(x: torch.Tensor, kind: str, params: list, radius: int = 3) -> torch.Tensor:
    """Apply one kind of corruption to (n, C, H, W) images in [-1, 1] with one parameter per image (unclamped);
    ``radius``: the blur kernel's (``2 radius + 1`` taps)."""
    if kind == "blur":
        return gaussian_blur(x, torch.tensor(params, dtype=x.dtype), radius)
    if kind == "noise":
        return x + torch.from_numpy(np.stack(params))
    if kind == "shift":
        return torch.stack([_shift(xi, *p) for xi, p in zip(x, params)])
    if kind == "contrast":
        return torch.tensor(params, dtype=x.dtype).view(-1, 1, 1, 1) * (x + 1.0) - 1.0
    return _jpeg(x, params)


def _ids(images: torch.Tensor, ids: Sequence[int] | torch.Tensor, who: str) -> list[int]:
    """``ids`` as Python ints, one per image (ValueError naming ``who`` otherwise)."""
    out = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    if len(out) != images.shape[0]:
        raise ValueError(f"{who}: {images.shape[0]} images but {len(out)} ids")
    return out


def corrupt(images: torch.Tensor, ids: Sequence[int] | torch.Tensor, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Covariate-shifted copies of ``images``, the mixed recipe: each image one kind, drawn uniformly, at severity 1.

    Args:
        images: float (N, C, H, W) in [-1, 1], C = 1 or 3.
        ids: (N,) the stable id of each image (>= 0); image i's corruption is drawn by a generator seeded with
            ``(seed, ids[i])``, so it does not depend on the other images.
        seed: the set's seed (give each corrupted set its own).
    Returns:
        (float32 (N, C, H, W) in [-1, 1], the kind of each image, names from :data:`CORRUPTIONS`).
    """
    shape = tuple(images.shape[1:])
    draws = [draw(np.random.default_rng([seed, sid]), shape)  # type: ignore[arg-type]
             for sid in _ids(images, ids, "corrupt")]
    out = images.float().clone()
    for kind in CORRUPTIONS:
        rows = [i for i, d in enumerate(draws) if d.kind == kind]
        if rows:
            out[rows] = apply(out[rows], kind, [draws[i].param for i in rows])
    return out.clamp_(-1.0, 1.0), [d.kind for d in draws]


def kind_draws(ids: Sequence[int] | torch.Tensor, seed: int, kind: str, severity: int,
               shape: tuple[int, int, int]) -> list[Draw]:
    """The draws :func:`corrupt_kind` uses: one per id, from a generator seeded with ``(seed, id)``."""
    stable = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    return [draw_param(np.random.default_rng([seed, sid]), kind, severity, shape) for sid in stable]


def corrupt_kind(images: torch.Tensor, ids: Sequence[int] | torch.Tensor, seed: int, kind: str,
                 severity: int) -> torch.Tensor:
    """Covariate-shifted copies of ``images``, every one with corruption ``kind`` at ``severity`` (1, 2 or 3), its
    parameter drawn from :func:`severity_range` by a generator seeded with ``(seed, ids[i])``.

    Args, shapes and ranges as :func:`corrupt`. Returns float32 (N, C, H, W) in [-1, 1].
    """
    span = severity_range(kind, severity)
    shape: tuple[int, int, int] = tuple(images.shape[1:])  # type: ignore[assignment]
    draws = kind_draws(_ids(images, ids, "corrupt_kind"), seed, kind, severity, shape)
    out = images.float().clone()
    if draws:
        out = apply(out, kind, [d.param for d in draws], blur_radius(span))
    return out.clamp_(-1.0, 1.0)
