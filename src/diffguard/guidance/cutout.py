"""Random square cutouts for Clean-Grad classifier guidance (paper Sec. 3.3, "cutout" augmentation of x0-hat).

The classifier sees ``n`` random square crops of the image instead of the image itself, and the guidance sums the
log-probabilities over the crops. This follows the authors' code (disco-diffusion's ``MakeCutouts``): for an image
whose shorter side is S, crop k has side ``int(u * (hi - lo) * S + lo * S)`` with ``u = rand()``, then offsets
``ox = randint(0, W - side + 1)`` and ``oy = randint(0, H - side + 1)``, drawn in exactly this order (rand, randint,
randint) per crop from a torch generator. With S = 256 and the default ``size_range`` that is the authors'
``int(u * 32 + 224)`` in [224, 255] (256 in the float32 rounding corner case u -> 1).

Randomness, two modes, chosen by what the caller passes as ``generator``:

* one ``torch.Generator`` (or None: the global CPU RNG): **shared** windows, drawn once and used for every sample,
  so crop k has the same window in all samples (the authors; they re-seed the generator before each image).
* a sequence of generators, one per sample: sample b's crops are drawn from ``generator[b]``.

Output layout is crop-major: (n * B, C, out, out) = [crop 1 of all samples; crop 2 of all samples; ...].
"""

from __future__ import annotations

from typing import Literal, Sequence, Union, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

ResizeMode = Literal["nearest", "nearest-exact", "bilinear", "bicubic", "area"]
Generators = Union[torch.Generator, Sequence[torch.Generator], None]
"""One generator (shared windows), one generator per sample, or None (shared windows from the global CPU RNG)."""


class Cutouts:
    """Random square crops resized to one size.

    Args:
        n: number of crops per image. 0, a negative number or None means no cutouts: the identity (the full image,
            no resize), the authors' ``cutouts_num: -1`` ablation.
        size_range: (lo, hi), crop side as a fraction of the shorter image side S, 0 < lo <= hi <= 1.
        out_size: side the crops are resized to; None gives ``int(lo * S)``, the smallest crop side (224 for
            S = 256, the authors' ``cut_size``).
        mode: ``F.interpolate`` mode for the resize; the authors use the default, legacy ``"nearest"``.
    """

    def __init__(self, n: int | None, size_range: tuple[float, float] = (0.875, 1.0), out_size: int | None = None,
                 mode: ResizeMode = "nearest"):
        lo, hi = size_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"size_range must satisfy 0 < lo <= hi <= 1, got {size_range}")
        if mode not in get_args(ResizeMode):
            raise ValueError(f"mode must be one of {get_args(ResizeMode)}, got {mode!r}")
        if out_size is not None and out_size < 1:
            raise ValueError(f"out_size must be a positive int or None, got {out_size}")
        self.n = 0 if n is None or n < 0 else int(n)
        self.size_range = (float(lo), float(hi))
        self.out_size = out_size
        self.mode = mode

    @property
    def identity(self) -> bool:
        """True when no cutouts are made (n = 0)."""
        return self.n == 0

    def __repr__(self) -> str:
        return f"Cutouts(n={self.n}, size_range={self.size_range}, out_size={self.out_size}, mode={self.mode!r})"

    def output_size(self, height: int, width: int) -> int:
        """Side of the resized crops for an image of ``height`` x ``width``."""
        return self.out_size if self.out_size is not None else int(self.size_range[0] * min(height, width))

    def windows(self, height: int, width: int, batch: int, generator: Generators = None) -> Tensor:
        """Draw the crop windows, consuming the generator(s) in the authors' order.

        Args:
            height, width: image size.
            batch: number of samples B (the length of ``generator`` when it is a sequence).
            generator: see the module docstring.

        Returns:
            (n, B, 3) int64 CPU tensor of (top, left, side); crop k of sample b is
            ``x[b, :, top:top + side, left:left + side]``. Empty (0, B, 3) for the identity.
        """
        if self.identity:
            return torch.zeros(0, batch, 3, dtype=torch.long)
        if generator is None or isinstance(generator, torch.Generator):
            one = self._draw(height, width, generator)
            return one[:, None, :].expand(self.n, batch, 3).clone()
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch}; pass one per sample")
        return torch.stack([self._draw(height, width, g) for g in generator], dim=1)

    def _draw(self, height: int, width: int, gen: torch.Generator | None) -> Tensor:
        """(n, 3) windows from one generator: per crop rand() for the side, randint for left, randint for top."""
        lo, hi = self.size_range
        side_max = min(height, width)
        device = gen.device if gen is not None else torch.device("cpu")
        out = []
        for _ in range(self.n):
            u = torch.rand([], generator=gen, device=device)  # float32, as the authors
            side = min(max(int(u * (hi - lo) * side_max + lo * side_max), 1), side_max)
            left = int(torch.randint(0, width - side + 1, (), generator=gen, device=device))
            top = int(torch.randint(0, height - side + 1, (), generator=gen, device=device))
            out.append((top, left, side))
        return torch.tensor(out, dtype=torch.long).reshape(self.n, 3)

    def crop(self, x: Tensor, windows: Tensor) -> Tensor:
        """Cut ``windows`` (n, B, 3) out of x (B, C, H, W) and resize: (n * B, C, out, out), crop-major.

        The identity (n = 0) returns x unchanged. A crop window shared by all samples is cut in one batched slice.
        """
        if self.identity:
            return x
        if windows.shape[:2] != (self.n, x.shape[0]):
            raise ValueError(f"windows of shape {tuple(windows.shape)} do not match n={self.n}, B={x.shape[0]}")
        size = self.output_size(x.shape[-2], x.shape[-1])
        pieces = []
        for w in windows.tolist():  # one entry per crop k: B windows
            if all(wb == w[0] for wb in w):
                pieces.append(self._resize(_slice(x, *w[0]), size))
            else:
                pieces.append(torch.cat([self._resize(_slice(x[b:b + 1], *wb), size) for b, wb in enumerate(w)]))
        return torch.cat(pieces)

    def with_windows(self, x: Tensor, generator: Generators = None) -> tuple[Tensor, Tensor]:
        """Draw windows and crop. x: (B, C, H, W), any range. Returns (crops (n*B, C, out, out), windows (n, B, 3))."""
        windows = self.windows(x.shape[-2], x.shape[-1], x.shape[0], generator)
        return self.crop(x, windows), windows

    def __call__(self, x: Tensor, generator: Generators = None) -> Tensor:
        """x: (B, C, H, W), any range -> crops (n * B, C, out, out), crop-major; x itself for the identity."""
        return self.with_windows(x, generator)[0]

    def _resize(self, crop: Tensor, size: int) -> Tensor:
        if crop.shape[-2:] == (size, size):
            return crop
        if self.mode in ("bilinear", "bicubic"):
            return F.interpolate(crop, size=(size, size), mode=self.mode, align_corners=False)
        return F.interpolate(crop, size=(size, size), mode=self.mode)


def _slice(x: Tensor, top: int, left: int, side: int) -> Tensor:
    return x[:, :, top:top + side, left:left + side]
