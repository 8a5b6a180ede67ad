"""Builders for the paper's settings from local checkpoints (see docs/paper-configs.md).

Each builder takes file paths only (nothing is downloaded) and returns a ready
:class:`~diffguard.detectors.diffguard.DiffGuard`; :data:`PAPER_CONFIGS` describes the same settings as plain dicts
(files needed, input size, preset and options) for a command line or a benchmark runner to read.

* ``gdm``: Table 2 "Ours (GDM)", the authors' exp6.1 -- ADM 256x256 unconditional + torchvision ResNet-50 at 224.
* ``ldm``: Table 2 "Ours (LDM)", the authors' ldm-exp2.25 -- CompVis cin256-v2 + ResNet-50 at 256.
* ``cifar10``: Table 1 (CIFAR-10) -- a class-conditional pixel UNet with a null class (DiffNB's DDIM checkpoint, or
  a diffusers folder) + OpenOOD's ResNet18_32x32, compared by the L1 distance of logits. The authors did not release
  this code: the guidance settings are the LDM path's and are not verified against the paper's numbers.
"""

from __future__ import annotations

import os
from typing import Any

from diffguard.detectors.diffguard import DiffGuard

PathLike = str | os.PathLike[str]

PAPER_CONFIGS: dict[str, dict[str, Any]] = {
    "gdm": {
        "paper": "Table 2, Ours (GDM); authors' testOOD/exp/exp6.1.yaml",
        "builder": "diffguard.paper.build_gdm_detector",
        "files": {"adm_checkpoint": "guided-diffusion 256x256_diffusion_uncond.pt",
                  "classifier_weights": "torchvision ResNet-50 IMAGENET1K_V1 (resnet50-0676ba61.pth)",
                  "dists_weights": "DISTS weights file (diffguard.distances.write_dists_weights)"},
        "data": {"input_size": 224, "preprocess": "Resize(256) + CenterCrop(224), [-1, 1]"},
        "preset": "gdm", "options": {"steps": 100, "early_stop_steps": 10, "psnr_threshold": 48.5,
                                     "dists_threshold": 0.38},
        "nfe_per_image": "UNet: (k + 1) inversion + 2 (k + 3) denoising image-evaluations for stop index k "
                         "(k = 89 without early stop: 274); classifier: 8 (k + 3) crop forward+backward passes",
    },
    "ldm": {
        "paper": "Table 2, Ours (LDM); authors' testOOD/exp/ldm-exp2.25.yaml",
        "builder": "diffguard.paper.build_ldm_detector",
        "files": {"ldm_checkpoint": "CompVis latent-diffusion cin256-v2 model.ckpt (VQ-f4)",
                  "classifier_weights": "torchvision ResNet-50 IMAGENET1K_V1",
                  "dists_weights": "DISTS weights file"},
        "data": {"input_size": 256, "preprocess": "Resize(256) + CenterCrop(256), [-1, 1]"},
        "preset": "ldm", "options": {"steps": 25, "cam_cut": 0.3, "scale": 10.0},
        "nfe_per_image": "UNet: 25 inversion + 50 denoising (fused CFG) image-evaluations = 75; VQ encode + decode "
                         "once; classifier: 1 forward (label) + 1 forward+backward (Grad-CAM); DISTS: one VGG16 "
                         "pass over input and synthesis",
    },
    "cifar10": {
        "paper": "Table 1 (CIFAR-10); the authors' CIFAR code is not released",
        "builder": "diffguard.paper.build_cifar10_detector",
        "files": {"diffusion": "DiffNB's class-conditional DDIM checkpoint (luping-liu/DiffOOD, "
                               "config/ddim_cifar10_cond.yml), or a diffusers folder (unet/ with 11 class "
                               "embeddings, scheduler/)",
                  "classifier_weights": "OpenOOD cifar10_resnet18_32x32_base_e100_lr0.1_default/s0/best.ckpt"},
        "data": {"input_size": 32, "preprocess": "ToTensor, [-1, 1]"},
        "preset": "ldm", "options": {"steps": 25, "cam_cut": 0.3, "scale": 10.0, "distances": ["logits_l1"]},
        "nfe_per_image": "UNet: 25 inversion + 50 denoising image-evaluations = 75; classifier: 1 forward + 1 "
                         "forward+backward (Grad-CAM) + 2 forwards (logits distance)",
    },
}


def build_gdm_detector(adm_checkpoint: PathLike, classifier_weights: PathLike, dists_weights: PathLike,
                       steps: int = 100, **overrides: Any) -> DiffGuard:
    """Table 2 "Ours (GDM)": ADM 256 px unconditional (``256x256_diffusion_uncond.pt``), ResNet-50 at 224 px,
    the authors' exp6.1 (AES PSNR 48.5 / 1 - DISTS 0.38, Clean Grad with 8 cutouts, unguided reference, DISTS).

    Inputs are (B, 3, 224, 224) in [-1, 1]; they are resized to 256 for the diffusion model (bilinear, no
    antialias) and the syntheses back to 224. ``overrides`` go to :func:`diffguard.presets.create_detector`.
    """
    from diffguard.backends.adm import adm_backend
    from diffguard.classify.torchvision import torchvision_classifier
    from diffguard.presets import create_detector

    backend = adm_backend(adm_checkpoint, resolution=256)
    clf = torchvision_classifier("resnet50", classifier_weights, num_classes=1000, resolution=224)
    return create_detector("gdm", clf, backend, dists_weights=dists_weights, steps=steps, **overrides)


def build_ldm_detector(ldm_checkpoint: PathLike, classifier_weights: PathLike, dists_weights: PathLike,
                       ldm_config: PathLike | dict | None = None, steps: int = 25, **overrides: Any) -> DiffGuard:
    """Table 2 "Ours (LDM)": CompVis cin256-v2 (VQ-f4, null class 1000), ResNet-50 at 256 px with Grad-CAM at
    ``layer4``, the authors' ldm-exp2.25 (25 steps, shifted inversion with the null class, CFG 10 inside the
    CAM mask cut at 0.3, compared with the input by DISTS). Inputs are (B, 3, 256, 256) in [-1, 1]."""
    from diffguard.backends.compvis_ldm import load_compvis_ldm
    from diffguard.classify.torchvision import torchvision_classifier
    from diffguard.presets import create_detector

    backend = load_compvis_ldm(ldm_checkpoint, ldm_config)
    clf = torchvision_classifier("resnet50", classifier_weights, num_classes=1000, resolution=256,
                                 cam_layer="layer4")
    return create_detector("ldm", clf, backend, dists_weights=dists_weights, steps=steps, **overrides)


def build_cifar10_detector(diffusion: PathLike, classifier_weights: PathLike, null_label: int | None = None,
                           steps: int = 25, **overrides: Any) -> DiffGuard:
    """Table 1 setting (CIFAR-10): a class-conditional pixel UNet with a null class, OpenOOD's ResNet18_32x32, CFG
    inside the Grad-CAM mask, and the L1 distance between the classifier's logits of the input and of the synthesis
    (the paper's CIFAR metric). Inputs are (B, 3, 32, 32) in [-1, 1].

    ``diffusion``: DiffNB's checkpoint file in the DDIM repository's layout (loaded with
    :func:`diffguard.backends.ddim_cifar.load_ddim_cifar`; null label = the class embedding's last row, 10), or a
    diffusers folder with ``unet/`` and ``scheduler/`` (null label 10 unless given).
    """
    from pathlib import Path

    from diffguard.backends.ddim_cifar import load_ddim_cifar
    from diffguard.backends.pixel import PixelBackend
    from diffguard.classify.openood import openood_resnet18_32x32
    from diffguard.presets import create_detector

    if Path(diffusion).is_dir():
        backend = PixelBackend.from_diffusers(str(diffusion), null_label=10 if null_label is None else null_label)
    else:
        backend = load_ddim_cifar(diffusion, null_label=null_label)
    clf = openood_resnet18_32x32(classifier_weights, num_classes=10)
    overrides.setdefault("distances", ("logits_l1",))
    return create_detector("ldm", clf, backend, steps=steps, **overrides)
