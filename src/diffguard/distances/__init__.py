"""Distances between an image and its synthesis: (x, x_hat) -> (B,), 0 for identical inputs, higher = more different.

Inputs are (B, C, H, W) in [-1, 1]; every distance maps them to [0, 1] and clamps first, as the authors' code does.
One registry holds them all (:data:`DISTANCES`); importing this package registers every kind:

========== ========================== ===============================================================
name       file                       definition
========== ========================== ===============================================================
l1         pixel.py                   mean over C, H, W of |u - u_hat|, u = clamp((x + 1) / 2, 0, 1)
l2         pixel.py                   ||u - u_hat||_2 over C, H, W (the authors' ``l2``, sign flipped)
psnr       pixel.py                   max(0, cap - PSNR(u, u_hat)), peak 1, cap 100 dB
ssim       structural.py              1 - piq.ssim(u, u_hat) (11x11 Gaussian window)
gmsd       structural.py              piq.gmsd(u, u_hat)
dists      perceptual.py              DISTS (VGG16 with L2 pooling; needs a local weights file)
lpips      perceptual.py              LPIPS-VGG (needs a local weights file)
logits_l1  semantic.py                sum_j |logits(x)_j - logits(x_hat)_j| (needs the classifier)
========== ========================== ===============================================================

Example::

    from diffguard.distances import create_distance, list_distances

    d = create_distance("dists", weights="weights/dists_vgg16.safetensors")
    scores = d(x, x_hat)   # (B,)
"""

from __future__ import annotations

from diffguard.distances.distance import DISTANCES, Distance, create_distance, list_distances, to_unit
from diffguard.distances.perceptual import DISTSDistance, LPIPSDistance, write_dists_weights, write_lpips_weights
from diffguard.distances.pixelwise import L1Distance, L2Distance, PSNRDistance
from diffguard.distances.semantic import LogitsL1Distance
from diffguard.distances.structural import GMSDDistance, SSIMDistance

__all__ = [
    "DISTANCES", "DISTSDistance", "Distance", "GMSDDistance", "L1Distance", "L2Distance", "LPIPSDistance",
    "LogitsL1Distance", "PSNRDistance", "SSIMDistance", "create_distance", "list_distances", "to_unit",
    "write_dists_weights", "write_lpips_weights",
]
