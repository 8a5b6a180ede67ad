"""diffguard: semantic-mismatch OOD detection with pre-trained diffusion models (DiffGuard, ICCV 2023).

Conventions: images are float tensors (B, C, H, W) in [-1, 1]; OOD labels are -1; scores are higher = more OOD.
"""

from __future__ import annotations

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.data.fmnist6 import ImageSet, load_fmnist6
from diffguard.detectors.detector import ClassifierOutputs, create_baseline, create_detector, list_baselines
from diffguard.detectors.diffguard import DiffGuard, DiffGuardResult
from diffguard.detectors.fusion import BandFusion
from diffguard.diffusion.ddim import Levels, ddim_invert, ddim_sample, ddim_step
from diffguard.diffusion.respace import even_levels, uniform_levels
from diffguard.evaluation.ood_metrics import compute_metrics, fpr_at_95_id, fpr_at_95_ood
from diffguard.guard.guard import Guard, GuardResult
from diffguard.model_files import load_classifier, load_diffusion
from diffguard.version import __version__

__all__ = [
    "BandFusion", "ClassifierOutputs", "DiffGuard", "DiffGuardResult", "Guard", "GuardResult", "ImageSet", "Levels", "PixelBackend",
    "__version__", "compute_metrics", "create_baseline", "create_detector", "ddim_invert", "ddim_sample", "ddim_step",
    "even_levels", "fpr_at_95_id", "fpr_at_95_ood", "list_baselines", "load_classifier", "load_diffusion",
    "load_fmnist6", "uniform_levels",
]
