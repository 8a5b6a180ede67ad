"""Batch-invariant network calls: every call sees exactly ``size`` rows, so a sample's result does not depend on its
batch-mates beyond float32 rounding (bit for bit where the math library rounds a row independently of its position).

Why. Math libraries pick kernels by batch size (measured on CPU, fmnist6 UNet: batches of 1, 2-3, 4-15, 16-63 and
64+ give four different float32 roundings, the last because diffusers' ``Upsample2D`` switches memory format at 64
rows; the classifier's input gradient has three classes: 1, 2-3, 4+). On that AMD EPYC machine a row's result did
not depend on the *contents* or *position* of the other rows of a call of a given shape, only on that shape; on an
Intel Xeon (2026-12-06) a row's position in a 3-row call changed its rounding by a few ulp, so there the chunks
remove the batch-size classes of rounding but not the last few ulp. Clean-Grad guidance with a
ReLU classifier turns such 1e-7 differences into large ones (a 1e-7 change of the input moves the fmnist6
logits-L1 score by 3 % of its ID inter-quartile range, in float64 as well: the gradient of a ReLU network jumps
where a unit changes sign), so the score of an image would depend on its batch. Calling the networks on fixed-size
chunks removes the cause: the same shape, hence the same kernels, for every row.

Cost: up to ``size - 1`` padding rows per call (the last chunk repeats its last row); a batch of 1 costs ``size``
rows. Results differ from one unchunked call only by float rounding.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import Tensor

Fn = TypeVar("Fn", bound=Callable[..., Tensor])


def fixed_chunks(fn: Fn, size: int | None) -> Fn:
    """``fn`` called on chunks of exactly ``size`` rows; None returns ``fn`` itself.

    The first positional argument x (n, ...) sets the row count n; every positional tensor argument with n rows
    (e.g. timesteps and labels) is cut the same way, other arguments (None, scalars) are passed to every chunk.
    The last chunk is padded by repeating its last row, and the padding rows' outputs are dropped. ``fn`` must map
    rows independently to an output (n, ...); autograd flows through (slices and ``torch.cat``).
    """
    if size is None:
        return fn
    if int(size) < 1:
        raise ValueError(f"row chunk size must be a positive int or None, got {size!r}")
    size = int(size)

    def chunked(x: Tensor, *args: object) -> Tensor:
        n = x.shape[0]
        if n == size or n == 0:
            return fn(x, *args)
        pad = -n % size
        rowed = [isinstance(a, Tensor) and a.ndim > 0 and a.shape[0] == n for a in (x, *args)]
        full = [_pad(a, pad) if r else a for a, r in zip((x, *args), rowed)]
        outs = [fn(*(a[i:i + size] if r else a for a, r in zip(full, rowed))) for i in range(0, n + pad, size)]
        return torch.cat(outs)[:n]

    return chunked  # type: ignore[return-value]


def _pad(a: Tensor, pad: int) -> Tensor:
    return torch.cat([a, a[-1:].expand(pad, *a.shape[1:])]) if pad else a
