"""Grad-CAM (Selvaraju et al., ICCV 2017) and the Distinct-Semantic-Guidance mask built from it (paper Sec. 3.4).

Grad-CAM for class y at a layer with activations A (B, K, h, w):

    w_k = mean_{i,j} d logit_y / d A_k[i, j],      cam = ReLU(sum_k w_k A_k)        (B, h, w)

on the raw logit of y (not the softmax), as the authors' ``ClassifierOutputTarget``. The DSG mask upsamples the CAM
to the input image resolution (bilinear, half-pixel, which is what cv2 INTER_LINEAR does when upsampling), min-max
normalises each image, thresholds it, and resizes the binary mask to the diffusion resolution (nearest).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CamClassifier(Protocol):
    """A classifier adapter as in :mod:`diffguard.classify.adapter`: ``logits`` on [-1, 1] images and ``cam_layer``."""

    cam_layer: nn.Module

    def logits(self, x: Tensor) -> Tensor: ...


def grad_cam(classifier: CamClassifier, x: Tensor, labels: Tensor) -> Tensor:
    """Grad-CAM of ``labels`` at ``classifier.cam_layer`` for the raw logits.

    The classifier runs with autograd on even inside ``torch.no_grad()``. The gradient is taken w.r.t. the layer's
    activations only, so no parameter accumulates ``.grad`` and nothing upstream of the layer is differentiated.

    Args:
        classifier: adapter with ``logits(x)`` and ``cam_layer`` (a module called once per forward, returning a
            (B, K, h, w) tensor).
        x: (B, C, H, W) images in [-1, 1] (clamped to that range, as the authors clamp to [0, 1]).
        labels: (B,) int64 target classes.

    Returns:
        (B, h, w) non-negative CAM at the layer's resolution, detached, in the activations' dtype.
    """
    store: dict[str, Tensor] = {}

    def hook(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 4 or "A" in store:
            raise ValueError("cam_layer must be called once per forward and return a (B, K, h, w) tensor")
        store["A"] = output.detach().requires_grad_(True)
        return store["A"].clone()  # a clone, so later in-place ops (ReLU(inplace=True)) leave A intact

    handle = classifier.cam_layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = classifier.logits(x.clamp(-1, 1))
            score = logits.gather(1, labels.to(logits.device).long()[:, None]).sum()
            (grads,) = torch.autograd.grad(score, store["A"])
    finally:
        handle.remove()
    acts = store["A"].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # w_k: spatial mean of d logit_y / d A_k
    return F.relu((weights * acts).sum(dim=1))


def cam_mask(cam: Tensor, image_size: tuple[int, int], out_size: tuple[int, int] | None = None,
             cut: float = 0.3) -> Tensor:
    """Binary DSG mask from a CAM, as the authors build it.

    Steps: upsample the CAM bilinearly (align_corners=False) to the input image resolution ``image_size``; per image,
    scale = (cam - min) / (max - min + 1e-7) in [0, 1]; mask = scale > cut for cut >= 0, or scale < |cut| for a
    negative cut (the inverted mask); resize the mask to ``out_size`` with 'nearest' (the diffusion or latent
    resolution, e.g. 64 x 64 for a 256 px image and an f4 autoencoder).

    Args:
        cam: (B, h, w) from :func:`grad_cam`.
        image_size: (H, W) of the classifier's input image.
        out_size: (H', W') of the diffusion space; None keeps ``image_size``.
        cut: threshold on the normalised CAM. The authors' config uses 0.3; the paper (Fig. 7, Sec. 4.4) reports
            about 0.2 as best.

    Returns:
        (B, 1, H', W') float {0, 1} mask in the CAM's dtype and device.
    """
    if cam.ndim != 3:
        raise ValueError(f"cam must be (B, h, w), got shape {tuple(cam.shape)}")
    # float64: a flat CAM must stay flat, or min-max would blow float32 rounding noise up to [0, 1]
    up = F.interpolate(cam[:, None].double(), size=tuple(image_size), mode="bilinear", align_corners=False)
    low = up.amin(dim=(2, 3), keepdim=True)
    high = up.amax(dim=(2, 3), keepdim=True)
    scaled = (up - low) / (high - low + 1e-7)
    mask = (scaled > cut) if cut >= 0 else (scaled < -cut)
    mask = mask.to(cam.dtype)
    if out_size is not None and tuple(out_size) != tuple(image_size):
        mask = F.interpolate(mask, size=tuple(out_size), mode="nearest")
    return mask
