"""OpenOOD classifiers from local checkpoints: the CIFAR ``ResNet18_32x32`` (OpenOOD v1.5 benchmark checkpoints
such as ``cifar10_resnet18_32x32_base_e100_lr0.1_default/s0/best.ckpt``).

The adapter takes [-1, 1] images at 32 x 32 (other sizes are resized bilinearly), normalises them with the CIFAR-10
statistics OpenOOD uses (mean 0.4914 / 0.4822 / 0.4465, std 0.2470 / 0.2435 / 0.2616), and exposes Grad-CAM at
``layer4`` and 512-d features (the input of ``fc``).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from torch import Tensor

from diffguard.classify.adapter import ModuleClassifier
from diffguard.classify.wrap import wrap_module
from diffguard.nets.cifar_resnet import CifarResNet18

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def openood_resnet18_32x32(weights: str | os.PathLike[str] | Mapping[str, Tensor] | None, num_classes: int = 10,
                           mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                           ) -> ModuleClassifier:
    """OpenOOD's ``ResNet18_32x32`` checkpoint as a classifier adapter.

    Args:
        weights: the ``.ckpt`` / ``.pth`` state dict (read with ``weights_only``) or a ``.safetensors`` file;
            ``module.`` prefixes from multi-GPU training are removed. None keeps random weights (tests).
        num_classes: 10 (CIFAR-10) or 100 (CIFAR-100).
        mean, std: override the normalisation (default CIFAR-10's, or CIFAR-100's for 100 classes).
    """
    stats = (CIFAR100_MEAN, CIFAR100_STD) if num_classes == 100 else (CIFAR10_MEAN, CIFAR10_STD)
    return wrap_module(CifarResNet18(num_classes), weights, num_classes=num_classes, resolution=(32, 32), mean=mean,
                       std=std, default_stats=stats, cam_layer="layer4", head="fc",
                       what="OpenOOD ResNet18_32x32 checkpoint")
