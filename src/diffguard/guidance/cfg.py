"""Classifier-free guidance (paper Eq. 5), conditional and unconditional predictions fused in one network call."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diffguard.diffusion.ddim import EpsFn

LabelEpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x_t (B, C, H, W), t (B,), y (B,) labels, null label allowed) -> eps, e.g. ``PixelBackend.eps``."""


def cfg_eps(model_eps: LabelEpsFn, labels: Tensor, null_label: int, scale: float) -> EpsFn:
    """eps = eps(x, null) + scale * (eps(x, y) - eps(x, null)) (Eq. 5): scale 0 gives the unconditional eps,
    1 the conditional one. labels: (B,) for the whole batch; the loop selects rows."""

    def eps_fn(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        e_u, e_c = uncond_cond_eps(model_eps, x, t, labels.to(x.device)[rows], null_label)
        return e_u + scale * (e_c - e_u)

    return eps_fn


def uncond_cond_eps(model_eps: LabelEpsFn, x: Tensor, t: Tensor, y: Tensor, null_label: int) -> tuple[Tensor, Tensor]:
    """(eps(x, null), eps(x, y)) from one fused network call on [x; x] with labels [null; y]. x: (B, C, H, W)."""
    both = model_eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([torch.full_like(y, null_label), y]))
    e_u, e_c = both.chunk(2)
    return e_u, e_c


def label_eps(model_eps: LabelEpsFn, labels: Tensor) -> EpsFn:
    """Plain conditional eps with per-sample labels (use the null label for unconditional rows)."""

    def eps_fn(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        return model_eps(x, t, labels.to(x.device)[rows])

    return eps_fn
