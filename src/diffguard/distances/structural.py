"""Structural distances from piq: ssim (1 - SSIM) and gmsd (GMSD), as the authors compute them.

Both run on the clamped [0, 1] images with ``data_range=1`` and take 1-channel (grayscale) or 3-channel (RGB)
images. Sizes: piq's SSIM uses a valid (unpadded) Gaussian window, so H and W must be at least ``kernel_size``
(11 by default: 28x28 works, giving an 18x18 SSIM map); images of 384 px and more are average-pooled first when
``downsample`` (factor round(min(H, W) / 256)), as in piq and the authors' code. piq's GMSD halves the image by 2x2
average pooling (zero-padding odd sizes) and then takes 3x3 Prewitt gradients with padding, so any H, W >= 2 works
(28x28 -> a 14x14 map).
"""

from __future__ import annotations

import piq
from torch import Tensor

from diffguard.distances.distance import DISTANCES, Distance, to_unit


@DISTANCES.register("ssim")
class SSIMDistance(Distance):
    """1 - SSIM (Wang et al. 2004), SSIM from ``piq.ssim`` with data_range 1, averaged over channels and pixels.

    SSIM lies in [-1, 1], so the distance lies in [0, 2] (clamped below at 0 against rounding); the authors' score is
    SSIM itself (1 - piq.SSIMLoss).

    Args:
        kernel_size: odd side of the Gaussian window (piq's and the authors' default 11); H, W >= kernel_size.
        kernel_sigma: the window's standard deviation (default 1.5).
        downsample: average-pool images of >= 384 px first (piq's default, True).

    Input: x, x_hat (B, C, H, W) in [-1, 1], C = 1 or 3. Output: (B,) in [0, 2].
    """

    name = "ssim"
    channels = (1, 3)

    def __init__(self, kernel_size: int = 11, kernel_sigma: float = 1.5, downsample: bool = True):
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"ssim: kernel_size must be a positive odd integer, got {kernel_size}")
        if kernel_sigma <= 0:
            raise ValueError(f"ssim: kernel_sigma must be positive, got {kernel_sigma}")
        self.kernel_size = int(kernel_size)
        self.kernel_sigma = float(kernel_sigma)
        self.downsample = bool(downsample)

    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        f = max(1, round(min(h, w) / 256)) if self.downsample else 1
        if min(h, w) // f < self.kernel_size:
            raise ValueError(f"ssim: images of {h}x{w} are smaller than the {self.kernel_size}x{self.kernel_size} "
                             "window; pass a smaller odd kernel_size, e.g. create_distance('ssim', kernel_size=7)")
        sim = piq.ssim(to_unit(x), to_unit(x_hat), kernel_size=self.kernel_size, kernel_sigma=self.kernel_sigma,
                       data_range=1.0, reduction="none", downsample=self.downsample)
        return (1 - sim).clamp_min(0)


@DISTANCES.register("gmsd")
class GMSDDistance(Distance):
    """Gradient Magnitude Similarity Deviation (Xue et al. 2013) from ``piq.gmsd`` with data_range 1.

    GMSD is the standard deviation over pixels of the gradient-magnitude similarity map (2 g g' + t) / (g^2 + g'^2
    + t), computed on the luminance (the Y of YIQ for RGB, the image itself for grayscale) after 2x2 average
    pooling. It is already a distance: 0 for identical images; the authors' score is -GMSD.

    Args:
        t: the stabilising constant of the similarity map (the paper's 170 / 255^2 for [0, 1] images).

    Input: x, x_hat (B, C, H, W) in [-1, 1], C = 1 or 3, H, W >= 2. Output: (B,) >= 0 (below 1 in practice).
    """

    name = "gmsd"
    channels = (1, 3)

    def __init__(self, t: float = 170 / 255**2):
        if t <= 0:
            raise ValueError(f"gmsd: t must be positive, got {t}")
        self.t = float(t)

    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        if min(x.shape[-2:]) < 2:
            raise ValueError(f"gmsd needs images of at least 2x2 pixels, got {tuple(x.shape[-2:])}")
        return piq.gmsd(to_unit(x), to_unit(x_hat), reduction="none", data_range=1.0, t=self.t)
