"""torchvision classifiers from an architecture name (or module) and a local weights file.

Example::

    from diffguard.classify.torchvision import torchvision_classifier

    clf = torchvision_classifier("resnet50", "resnet50-0676ba61.pth")  # ImageNet statistics, 224 px, CAM at layer4
    logits = clf.logits(x)                                              # x: (B, 3, H, W) in [-1, 1]

The architecture is built with ``torchvision.models.get_model(name, weights=None)`` (never downloads) and the file is
read with ``weights_only``. Files saved with the DiffGuard authors' normalisation wrapper (``normalize.mean`` /
``normalize.std`` + ``model.*``) or from ``DataParallel`` (``module.*``) load too; the stored statistics are used.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Mapping, Sequence

import torchvision
from torch import Tensor, nn

from diffguard.classify.adapter import ModuleClassifier
from diffguard.classify.wrap import IMAGENET_MEAN, IMAGENET_STD, check_num_classes, wrap_module


def build_torchvision(arch: str, num_classes: int = 1000, **arch_kwargs: Any) -> nn.Module:
    """A randomly initialised torchvision architecture by name (``torchvision.models.list_models()``)."""

    names = torchvision.models.list_models()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=3)
        raise ValueError(f"unknown torchvision architecture {arch!r}" + (f"; did you mean {close}?" if close else ""))
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **arch_kwargs)


def torchvision_classifier(arch: str | nn.Module, weights: str | os.PathLike[str] | Mapping[str, Tensor] | None,
                           num_classes: int = 1000, resolution: int | tuple[int, int] | None = None,
                           mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                           cam_layer: str | None = None, head: str | None = None,
                           **arch_kwargs: Any) -> ModuleClassifier:
    """A torchvision classifier as a :class:`~diffguard.classify.adapter.ModuleClassifier`.

    Args:
        arch: torchvision model name (``"resnet50"``, ``"vit_b_16"``, ...) or an already built ``nn.Module``.
        weights: local state-dict file (``.pth`` / ``.safetensors``) or dict; None keeps random weights (tests).
        num_classes: K (the head must match the file).
        resolution: input side(s); default the model's ``image_size`` (ViT) or 224.
        mean, std: input normalisation; default the statistics stored with the weights, else ImageNet's.
        cam_layer: Grad-CAM module name (default ``layer4`` / ``features`` / the last block before the head).
        head: name of the final linear layer (default: the last ``nn.Linear``); its input is ``features``.
        arch_kwargs: extra constructor arguments for a named architecture.
    """
    model = build_torchvision(arch, num_classes, **arch_kwargs) if isinstance(arch, str) else arch
    side = resolution or getattr(model, "image_size", 224)
    res = (side, side) if isinstance(side, int) else tuple(side)
    clf = wrap_module(model, weights, num_classes=num_classes, resolution=res, mean=mean, std=std,
                      default_stats=(IMAGENET_MEAN, IMAGENET_STD), cam_layer=cam_layer, head=head,
                      what=f"torchvision {arch if isinstance(arch, str) else type(arch).__name__} weights")
    check_num_classes(clf.model, head, num_classes)
    return clf
