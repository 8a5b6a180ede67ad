"""Classifier-free guidance (paper Eq. 5), conditional and unconditional predictions fused in one network call.

Rows whose label is the null label (the unguided reference reconstruction that runs in the same batch) need only the
unconditional prediction: the fused call is [x; x_guided] with labels [null; y_guided], B' + G images instead of
2 B'. Which rows are guided is decided on the host once per active set (:class:`~diffguard.diffusion.rows.RowsMemo`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diffguard.diffusion.ddim import EpsFn
from diffguard.diffusion.rows import RowsMemo

LabelEpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x_t (B, C, H, W), t (B,), y (B,) labels, null label allowed) -> eps, e.g. ``PixelBackend.eps``."""

Combine = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]
"""(e_u (G, ...), e_c (G, ...), rows (B',), guided positions in rows (G,) or None for all) -> guided eps (G, ...)."""


def cfg_eps(model_eps: LabelEpsFn, labels: Tensor, null_label: int, scale: float) -> EpsFn:
    """eps = eps(x, null) + scale * (eps(x, y) - eps(x, null)) (Eq. 5): scale 0 gives the unconditional eps,
    1 the conditional one. labels: (B,) for the whole batch (null_label = unguided row); the loop selects rows."""

    def combine(e_u: Tensor, e_c: Tensor, rows: Tensor, sel: Tensor | None) -> Tensor:
        return e_u + scale * (e_c - e_u)

    return guided_rows_eps(model_eps, labels, null_label, combine)


def guided_rows_eps(model_eps: LabelEpsFn, labels: Tensor, null_label: int, combine: Combine) -> EpsFn:
    """An eps function that evaluates eps(x, null) for all rows and eps(x, y) only for rows with a real label, in
    one fused network call, and returns ``combine(e_u, e_c, ...)`` on those rows and e_u on the others."""
    labels_d = labels.long()
    plan = RowsMemo(lambda rows: _guided_positions(labels_d, null_label, rows))

    def eps_fn(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        y = labels_d.to(x.device)[rows]
        sel = plan(rows)
        e_u, e_c = uncond_cond_eps(model_eps, x, t, y, null_label, sel)
        if sel is None:
            return combine(e_u, e_c, rows, None)
        return e_u.index_copy(0, sel, combine(e_u[sel], e_c, rows, sel))

    return eps_fn


def _guided_positions(labels: Tensor, null_label: int, rows: Tensor) -> Tensor | None:
    """Positions in ``rows`` with a real label, as a device index; None when every row is guided."""
    guided = labels.cpu()[rows.cpu()] != null_label
    return None if bool(guided.all()) else guided.nonzero().squeeze(1).to(rows.device)


def uncond_cond_eps(model_eps: LabelEpsFn, x: Tensor, t: Tensor, y: Tensor, null_label: int,
                    sel: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(eps(x, null) (B, ...), eps(x[sel], y[sel]) (G, ...)) from one fused network call on [x; x[sel]] with labels
    [null; y[sel]]. x: (B, C, H, W); sel None means all rows ([x; x] with [null; y])."""
    xs, ts, ys = (x, t, y) if sel is None else (x[sel], t[sel], y[sel])
    both = model_eps(torch.cat([x, xs]), torch.cat([t, ts]), torch.cat([torch.full_like(y, null_label), ys]))
    return both[: x.shape[0]], both[x.shape[0]:]


def label_eps(model_eps: LabelEpsFn, labels: Tensor) -> EpsFn:
    """Plain conditional eps with per-sample labels (use the null label for unconditional rows)."""

    def eps_fn(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        return model_eps(x, t, labels.to(x.device)[rows])

    return eps_fn
