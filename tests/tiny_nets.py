"""Tiny untrained fmnist6-shaped networks built in memory (seeded), for tests that need a backend and a classifier
but no trained weights."""

from __future__ import annotations

import torch

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import ModuleClassifier
from diffguard.nets.resnet import SmallResNet
from diffguard.train.train_diffusion import DiffusionTrainConfig, build_scheduler, build_unet


def tiny_pixel_models(seed: int = 0) -> tuple[PixelBackend, ModuleClassifier]:
    """(pixel backend of an (8, 16, 16)-channel class-conditional UNet with null label 6, 6-class SmallResNet of
    width 4 reading 28x28 grey images), both in eval mode."""
    torch.manual_seed(seed)
    cfg = DiffusionTrainConfig(channels=(8, 16, 16), attention_lowest=False)
    backend = PixelBackend(build_unet(cfg).eval(), build_scheduler(cfg).alphas_cumprod, null_label=6, channels=1)
    clf = ModuleClassifier(SmallResNet(6, width=4).eval(), 6, "layer4", resolution=(28, 28))
    return backend, clf
