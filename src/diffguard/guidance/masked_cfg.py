"""Distinct Semantic Guidance (DSG, paper Sec. 3.4): classifier-free guidance only inside a Grad-CAM mask.

Where the mask is 1 (the regions the classifier finds distinctive for its predicted label), the noise prediction is
the CFG one of Eq. 5, ``eps_u + scale * (eps_c - eps_u)``; elsewhere it is the unconditional ``eps_u``. The
conditional and unconditional predictions come from one fused network call on [x; x] with labels [null; y], as in
the authors' sampler (rows with the null label, the unguided reference, get only the unconditional prediction). Build the mask with :func:`diffguard.classify.gradcam.cam_mask` at the diffusion resolution.
"""

from __future__ import annotations

from torch import Tensor

from diffguard.diffusion.ddim import EpsFn
from diffguard.guidance.cfg import LabelEpsFn, cfg_eps, guided_rows_eps


def masked_cfg_eps(model_eps: LabelEpsFn, labels: Tensor, null_label: int, scale: float,
                   mask: Tensor | None) -> EpsFn:
    """eps = where(mask > 0.5, eps_u + scale * (eps_c - eps_u), eps_u) (Eq. 5 restricted to the DSG mask).

    Args:
        model_eps: (x_t, t, y) -> eps, the null label allowed (e.g. ``PixelBackend.eps``).
        labels: (B,) int64 class labels for the whole batch; the loop selects rows.
        null_label: the model's "no class" index.
        scale: guidance scale omega (the authors use 10 for the LDM); 1 gives the conditional eps inside the mask.
        mask: (B, 1, H, W) or (B, C, H, W) {0, 1} float at the diffusion resolution (H, W of x_t), for the whole
            batch; a 1-channel mask is broadcast over channels. None gives plain CFG everywhere (``cfg_eps``).

    Returns:
        An :data:`~diffguard.diffusion.ddim.EpsFn`.
    """
    if mask is None:
        return cfg_eps(model_eps, labels, null_label, scale)
    if mask.ndim != 4 or mask.shape[0] != labels.shape[0]:
        raise ValueError(f"mask must be (B, 1 or C, H, W) with B = {labels.shape[0]} labels, "
                         f"got shape {tuple(mask.shape)}")

    def combine(e_u: Tensor, e_c: Tensor, rows: Tensor, sel: Tensor | None) -> Tensor:
        m = mask.to(e_u.device)[rows if sel is None else rows[sel]]
        if m.shape[-2:] != e_u.shape[-2:] or m.shape[1] not in (1, e_u.shape[1]):
            raise ValueError(f"mask {tuple(m.shape[1:])} does not fit x_t {tuple(e_u.shape[1:])}; build it at the "
                             "diffusion resolution (cam_mask(..., out_size=latent size)) with 1 or C channels")
        return (e_u + scale * (e_c - e_u)).where(m > 0.5, e_u)

    return guided_rows_eps(model_eps, labels, null_label, combine)
