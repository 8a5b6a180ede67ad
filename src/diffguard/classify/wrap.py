"""Shared pieces of the pretrained-classifier adapters: weight files with a normalisation wrapper, the final linear
layer as the feature/logit split, and a default Grad-CAM layer.

Every adapter ends in a :class:`~diffguard.classify.adapter.ModuleClassifier`, so all of them take images (B, C, H, W)
in [-1, 1] and own their normalisation and resolution.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from torch import Tensor, nn

from diffguard.backends.loaders import CheckpointError, load_exact, read_state_dict
from diffguard.classify.adapter import FeatureTap, ModuleClassifier, check_module_name
from diffguard.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def split_normalizer(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], tuple | None, tuple | None]:
    """Undo the wrappers training code puts around a classifier's weights.

    * ``normalize.mean`` / ``normalize.std`` + ``model.*`` (the DiffGuard authors' ``normalize_model``): the
      statistics are returned and the ``model.`` prefix removed;
    * ``module.*`` (``DataParallel``): the prefix is removed.

    Returns:
        (state dict of the bare network, mean or None, std or None).
    """
    state = dict(state)
    mean = std = None
    if "normalize.mean" in state and "normalize.std" in state:
        mean = tuple(float(v) for v in state.pop("normalize.mean").flatten())
        std = tuple(float(v) for v in state.pop("normalize.std").flatten())
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, mean, std


def last_linear(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` (the classification head) in ``model``."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(f"the classifier ({type(model).__name__}) has no nn.Linear head; name the final layer "
                          "(head=<module name>) or the features module (features_layer=<module name>)")
    return names[-1]


def head_input_features(head: nn.Module) -> FeatureTap:
    """A ``features_fn`` returning the input of ``head`` (the penultimate features) from one forward pass."""
    return FeatureTap(head, "input")


def default_cam_layer(model: nn.Module) -> str:
    """``layer4`` (ResNets), else ``features`` (VGG, DenseNet, EfficientNet, ConvNeXt, MobileNet), else the last
    top-level child before the head."""
    children = [n for n, _ in model.named_children()]
    for name in ("layer4", "features", "stages"):
        if name in children:
            return name
    return children[-2] if len(children) > 1 else children[-1]


def wrap_module(model: nn.Module, weights: str | os.PathLike[str] | Mapping[str, Tensor] | None, *,
                num_classes: int, resolution: tuple[int, int] | None, mean: Sequence[float] | None,
                std: Sequence[float] | None, default_stats: tuple[Sequence[float], Sequence[float]],
                cam_layer: str | None = None, head: str | None = None, what: str = "classifier",
                features_layer: str | None = None) -> ModuleClassifier:
    """Load ``weights`` (strict) into ``model`` and wrap it as a :class:`ModuleClassifier`.

    mean / std: explicit normalisation; else the statistics stored with the weights (``normalize.*``); else
    ``default_stats``. ``head``: the linear head's module name (default the last ``nn.Linear``).
    ``features_layer``: a module whose output (flattened) are the features (default: the head's input).
    """
    stored_mean = stored_std = None
    if weights is not None:
        raw = read_state_dict(weights) if isinstance(weights, (str, os.PathLike)) else weights
        state, stored_mean, stored_std = split_normalizer(raw)
        load_exact(model, state, what)
    model = model.float().eval()
    mean = mean or stored_mean or default_stats[0]
    std = std or stored_std or default_stats[1]
    if features_layer is None:
        head_mod = check_module_name(model, head or last_linear(model), "head")
        tap = head_input_features(head_mod)
    else:
        tap = FeatureTap(check_module_name(model, features_layer, "features_layer"), "output")
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head_mod = check_module_name(model, head, "head") if head else (linears[-1] if linears else None)
    return ModuleClassifier(model, num_classes, cam_layer or default_cam_layer(model), mean=mean, std=std,
                            resolution=resolution, features_fn=tap, head=head_mod)


def check_num_classes(model: nn.Module, head: str | None, expected: int | None) -> int:
    """The head's output size, checked against ``expected`` when given."""
    out = dict(model.named_modules())[head or last_linear(model)].out_features
    if expected is not None and expected != out:
        raise CheckpointError(f"the classifier head has {out} outputs, not num_classes={expected}")
    return out


def module_classifier(model: nn.Module, weights: str | os.PathLike[str] | Mapping[str, Tensor] | None,
                      num_classes: int, cam_layer: str, resolution: int | tuple[int, int] | None,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      head: str | None = None) -> ModuleClassifier:
    """Any ``nn.Module`` classifier (normalised images -> logits) with a named Grad-CAM layer, weights loaded
    strictly from a local file (the authors' ``normalize.*`` wrapper and ``module.`` prefixes are understood).

    mean / std default to the stored statistics, else ImageNet's; ``head`` (default the last ``nn.Linear``) splits
    features from logits.
    """
    side = (resolution, resolution) if isinstance(resolution, int) else resolution
    clf = wrap_module(model, weights, num_classes=num_classes, resolution=side, mean=mean, std=std,
                      default_stats=(IMAGENET_MEAN, IMAGENET_STD), cam_layer=cam_layer, head=head,
                      what=f"{type(model).__name__} weights")
    check_num_classes(clf.model, head, num_classes)
    return clf
