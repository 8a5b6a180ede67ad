"""diffguard: semantic-mismatch OOD detection with pre-trained diffusion models (DiffGuard, ICCV 2023).

Conventions: images are float tensors (B, C, H, W) in [-1, 1]; OOD labels are -1; scores are higher = more OOD.
"""

from __future__ import annotations

from diffguard.backends.pixel import PixelBackend
from diffguard.data.fmnist6 import ImageSet, load_fmnist6
from diffguard.diffusion.ddim import Levels, ddim_invert, ddim_sample, ddim_step
from diffguard.diffusion.respace import even_levels, uniform_levels
from diffguard.models import load_classifier, load_diffusion

__version__ = "0.1.0"

__all__ = [
    "ImageSet", "Levels", "PixelBackend", "__version__", "ddim_invert", "ddim_sample", "ddim_step", "even_levels",
    "load_classifier", "load_diffusion", "load_fmnist6", "uniform_levels",
]
