"""Classifier adapters: the protected classifier seen through one contract.

Every adapter takes images (B, C, H, W) in [-1, 1] (the library's convention) and owns the classifier's own input
normalisation and resolution. It exposes ``logits(x)`` (B, K), ``features(x)`` (B, D) penultimate features (for
KNN / ViM / MDS), ``logits_and_features(x)`` in one pass, ``cam_layer`` (the module whose activations Grad-CAM
uses) and ``num_classes``. Gradients flow through ``logits`` (Clean-Grad guidance needs them).
"""

from __future__ import annotations

import difflib
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffguard.errors import ConfigError
from diffguard.model_files import classifier_config, load_classifier


class FeatureTap:
    """A ``features_fn`` reading the input or the output of one submodule during the classifier's own forward, so
    that :meth:`ModuleClassifier.logits_and_features` costs one pass.

    Args:
        module: the submodule (e.g. the final ``nn.Linear``, whose input are the penultimate features).
        take: "input" (first positional input) or "output"; the captured tensor is flattened to (B, D).
    """

    def __init__(self, module: nn.Module, take: Literal["input", "output"] = "input"):
        if take not in ("input", "output"):
            raise ValueError(f"take must be 'input' or 'output', got {take!r}")
        self.module, self.take = module, take

    def capture(self, model: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
        """(model(z) (B, K), the tapped tensor (B, D)) from one forward pass of normalised input ``z``."""
        store: list[Tensor] = []
        handle = self.module.register_forward_hook(
            lambda mod, inp, out: store.append(inp[0] if self.take == "input" else out))
        try:
            logits = model(z)
        finally:
            handle.remove()
        if len(store) != 1:
            raise ConfigError(f"the feature module ({type(self.module).__name__}) ran {len(store)} times in one "
                              "forward; name a module that runs once (features_layer) or pass features_fn")
        return logits, store[0].flatten(1)

    def __call__(self, model: nn.Module, z: Tensor) -> Tensor:
        return self.capture(model, z)[1]


def check_module_name(model: nn.Module, name: str, what: str) -> nn.Module:
    """The submodule called ``name`` (a ``model.named_modules()`` key); an unknown name raises
    :class:`~diffguard.errors.ConfigError` listing the closest names."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    top = [n for n, _ in model.named_children()]
    raise ConfigError(f"{what} {name!r} is not a module of the classifier ({type(model).__name__}); "
                      + (f"close names: {close}; " if close else "")
                      + f"top-level modules: {top[:12]} (any dotted named_modules() key works, e.g. 'layer4.1')")


class ModuleClassifier(nn.Module):
    """Adapter for any ``nn.Module`` classifier.

    Args:
        model: maps normalised images to logits.
        num_classes: K.
        cam_layer: name of the submodule for Grad-CAM (``dict(model.named_modules())`` key, e.g. ``"layer4"``).
        mean, std: per-channel normalisation applied to (x + 1) / 2 in [0, 1] (0.5 / 0.5 keeps [-1, 1]).
        resolution: (H, W) the classifier expects; inputs of another size are resized bilinearly (no antialias).
            None keeps the input size.
        features_fn: (model, normalised input) -> penultimate features (B, D); default ``model.features`` when it
            exists. A :class:`FeatureTap` gives logits and features from one forward.
        head: module mapping features to logits (default ``model.fc`` when it exists), so that
            ``logits_and_features`` costs one pass.
    """

    def __init__(self, model: nn.Module, num_classes: int, cam_layer: str, mean: Sequence[float] = (0.5,),
                 std: Sequence[float] = (0.5,), resolution: tuple[int, int] | None = None,
                 features_fn: Callable[[nn.Module, Tensor], Tensor] | None = None, head: nn.Module | None = None):
        super().__init__()
        self.model = model.eval()
        self.num_classes = num_classes
        self.cam_layer = check_module_name(model, cam_layer, "cam_layer")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.resolution = resolution
        self._features_fn = features_fn
        self._head = head if head is not None else getattr(model, "fc", None)

    def preprocess(self, x: Tensor) -> Tensor:
        """[-1, 1] images -> the classifier's normalised input at its resolution."""
        if x.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        if self.resolution is not None and tuple(x.shape[-2:]) != tuple(self.resolution):
            x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False, antialias=False)
        return ((x + 1) / 2 - self.mean.to(x)) / self.std.to(x)

    def logits(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) in [-1, 1] -> logits (B, K)."""
        return self.model(self.preprocess(x))

    forward = logits

    def features(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) in [-1, 1] -> penultimate features (B, D)."""
        z = self.preprocess(x)
        if self._features_fn is not None:
            return self._features_fn(self.model, z)
        if hasattr(self.model, "features"):
            return self.model.features(z)
        raise NotImplementedError("this classifier has no features(); pass features_fn to the adapter")

    @property
    def head(self) -> nn.Linear:
        """The linear layer mapping features (B, D) to logits (B, K) (ViM and MC-Dropout use it)."""
        if not isinstance(self._head, nn.Linear):
            raise ValueError(f"the classifier's head is {type(self._head).__name__}, not a known nn.Linear: "
                             "pass head=<the final nn.Linear> to ModuleClassifier")
        return self._head

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Both in one pass when the features come from a :class:`FeatureTap` or a linear head is known:
        (B, K), (B, D)."""
        if isinstance(self._features_fn, FeatureTap):
            return self._features_fn.capture(self.model, self.preprocess(x))
        feats = self.features(x)
        if self._head is None:
            return self.logits(x), feats
        return self._head(feats), feats


def fmnist6_classifier(folder: str | None = None) -> ModuleClassifier:
    """The shipped fmnist6 classifier (or one from ``folder``) as an adapter: [-1, 1] input at the folder's
    resolution (28x28 for fmnist6), CAM at layer4."""

    model = load_classifier(folder)
    side = int(classifier_config(folder).get("resolution", 28))
    return ModuleClassifier(model, model.config["num_classes"], "layer4", resolution=(side, side))
