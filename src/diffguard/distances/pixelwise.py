"""Pixel distances: l1, l2 (the authors' ``l2``) and psnr (PSNR turned into a distance).

All three work on the clamped [0, 1] images u = clamp((x + 1) / 2, 0, 1) and accept any number of channels.
"""

from __future__ import annotations

import math

from torch import Tensor

from diffguard.distances.distance import DISTANCES, Distance, to_unit


@DISTANCES.register("l1")
class L1Distance(Distance):
    """Mean absolute difference over C, H, W of the [0, 1] images: mean |u - u_hat|.

    Input: x, x_hat (B, C, H, W) in [-1, 1]. Output: (B,) in [0, 1].
    """

    name = "l1"

    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return (to_unit(x) - to_unit(x_hat)).abs().flatten(1).mean(1)


@DISTANCES.register("l2")
class L2Distance(Distance):
    """Euclidean norm over C, H, W of the [0, 1] images: ||u - u_hat||_2 (a norm, not a mean of squares).

    This is the authors' ``l2`` score with the sign flipped (their score is -||ref - recon||_2). Input: x, x_hat
    (B, C, H, W) in [-1, 1]. Output: (B,) in [0, sqrt(C * H * W)].
    """

    name = "l2"

    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return (to_unit(x) - to_unit(x_hat)).flatten(1).norm(dim=1)


@DISTANCES.register("psnr")
class PSNRDistance(Distance):
    """PSNR turned into a distance: ``max(0, cap - PSNR)``, with PSNR in dB on the [0, 1] images (peak 1).

    PSNR = -10 log10(mse), mse = mean over C, H, W of (u - u_hat)^2, clamped below at 10^(-cap / 10) (1e-10 for the
    default cap of 100 dB). It is computed as 10 log10(max(mse, floor) / floor), which equals max(0, cap - PSNR) and
    is exactly 0 for identical images. Identical images (PSNR = inf) and any pair with PSNR >= cap give 0; a
    completely wrong pair (mse = 1) gives cap.

    Note: the authors only use PSNR inside adaptive early stop, on [-1, 1] images with peak 255; this distance is the
    [0, 1] version, for scoring.

    Args:
        cap: the PSNR in dB that counts as "identical" (> 0).

    Input: x, x_hat (B, C, H, W) in [-1, 1]. Output: (B,) in [0, cap].
    """

    name = "psnr"

    def __init__(self, cap: float = 100.0):
        if not (cap > 0 and math.isfinite(cap)):
            raise ValueError(f"psnr: cap must be a positive finite number of dB, got {cap}")
        self.cap = float(cap)
        self.floor = 10.0 ** (-self.cap / 10)

    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        mse = (to_unit(x) - to_unit(x_hat)).square().flatten(1).mean(1)
        return 10 * (mse.clamp_min(self.floor) / self.floor).log10()

    def psnr(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """PSNR in dB (B,), at most ``cap``: cap - distance."""
        return self.cap - self(x, x_hat)
