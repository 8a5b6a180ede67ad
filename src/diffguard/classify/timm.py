"""timm classifiers from an architecture name and a local weights file (optional dependency: ``pip install
diffguard[timm]``).

``timm.create_model(name, pretrained=False)`` builds the architecture (nothing is downloaded); the file is read with
``weights_only`` or safetensors. The input normalisation and resolution come from the model's ``pretrained_cfg``
(the values timm trained it with) unless given.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Mapping, Sequence

from torch import Tensor

from diffguard.classify.adapter import ModuleClassifier
from diffguard.classify.wrap import IMAGENET_MEAN, IMAGENET_STD, check_num_classes, wrap_module


def _timm() -> Any:
    try:
        import timm  # optional: timm (the extra diffguard[timm])
    except ImportError as err:
        raise ImportError("timm classifiers need the optional dependency timm: pip install 'diffguard[timm]'") \
            from err
    return timm


def timm_classifier(arch: str, weights: str | os.PathLike[str] | Mapping[str, Tensor] | None,
                    num_classes: int = 1000, resolution: int | tuple[int, int] | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    cam_layer: str | None = None, **create_kwargs: Any) -> ModuleClassifier:
    """A timm model as a :class:`~diffguard.classify.adapter.ModuleClassifier`.

    Args:
        arch: timm model name (``timm.list_models()``), e.g. ``"resnet50"``, ``"vit_base_patch16_224"``.
        weights: local ``.safetensors`` / ``.pth`` / ``.bin`` state dict, or a dict; None keeps random weights.
        num_classes: K.
        resolution: input side(s); default the model's ``pretrained_cfg['input_size']``.
        mean, std: default the model's ``pretrained_cfg`` statistics.
        cam_layer: Grad-CAM module (default ``layer4`` / ``features`` / ``stages`` / the last block).
        create_kwargs: extra ``timm.create_model`` arguments.
    """
    timm = _timm()
    if not timm.is_model(arch.split(".")[0]):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise ValueError(f"unknown timm architecture {arch!r}" + (f"; did you mean {close}?" if close else ""))
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **create_kwargs)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    side = resolution or tuple(cfg.get("input_size", (3, 224, 224))[1:])
    res = (side, side) if isinstance(side, int) else tuple(side)
    head_mod = model.get_classifier()
    head = next(n for n, m in model.named_modules() if m is head_mod)
    stats = (tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))
    clf = wrap_module(model, weights, num_classes=num_classes, resolution=res, mean=mean, std=std,
                      default_stats=stats, cam_layer=cam_layer, head=head, what=f"timm {arch} weights")
    check_num_classes(clf.model, head, num_classes)
    return clf
