"""Any ``torch.nn.Module`` classifier named by its import path, with weights from a local file.

The model spec (YAML or a Python dict; see :mod:`diffguard.specs.model_specs`)::

    classifier:
      type: module
      class: my_pkg.nets:MyNet          # module:attribute (a class or a function returning an nn.Module);
                                        # a file works too: /code/nets.py:MyNet
      kwargs: {width: 64, num_classes: 10}   # constructor arguments
      weights: /ckpt/mynet.safetensors  # or a torch file read with weights_only=True (a nested state_dict /
                                        # model entry is unwrapped); null: the constructor loads its own
      cam_layer: layer4                 # the module Grad-CAM reads (a named_modules() key)
      features_layer: avgpool           # optional: its output are the features (default: the last Linear's input)
      mean: [0.485, 0.456, 0.406]       # optional: applied to (x + 1) / 2 in [0, 1]; without mean / std the
      std: [0.229, 0.224, 0.225]        #   network receives the [-1, 1] images unchanged
      resolution: 224                   # optional: inputs are resized to it (bilinear); default: as given
      num_classes: 10                   # optional: default the last Linear's outputs

The network must map a normalised batch (B, C, H, W) to logits (B, K). ViM and MC-Dropout use the last Linear as
the head, so for them ``features_layer`` should give that Linear's input (KNN / MDS take any features). Weights
load strictly: missing or unexpected keys and wrong shapes are listed. Statistics stored with the weights by the
DiffGuard authors' ``normalize_model`` wrapper (``normalize.mean`` / ``normalize.std``) are used when no mean / std
is given.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from diffguard.backends.loaders import CheckpointError
from diffguard.classify.adapter import ModuleClassifier
from diffguard.classify.wrap import check_num_classes, default_cam_layer, wrap_module
from diffguard.errors import ConfigError

IDENTITY_STATS = ((0.5,), (0.5,))
"""(x + 1) / 2 normalised by mean 0.5 / std 0.5 is x again: the network sees [-1, 1] images."""


def _import_module(name: str) -> Any:
    if name.endswith(".py"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"class: the file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"diffguard_user_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = module  # type: ignore[union-attr]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            raise ConfigError(f"class: cannot import {name!r} (no module named {err.name!r}); install the package "
                              "or put its folder on PYTHONPATH, or give a file: /path/to/nets.py:MyNet") from None
        raise ConfigError(f"class: importing {name!r} failed because a module it imports is missing ({err})") \
            from err


def source_file(target: str) -> Path | None:
    """The Python file that defines ``target``'s module (a ``/path/file.py:Name`` file itself, else the module's
    origin as the import system finds it), for the run manifest's hashes; None when it cannot be found."""
    module_name = target.rpartition(":" if ":" in target else ".")[0]
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        return path if path.is_file() else None
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None)
    return Path(origin) if origin and Path(origin).is_file() else None


def import_object(target: str) -> Any:
    """The object named ``"package.module:attribute"`` (also ``"package.module.attribute"`` and
    ``"/path/to/file.py:attribute"``; the attribute may be dotted)."""
    module_name, _, attr = target.rpartition(":" if ":" in target else ".")
    if not module_name or not attr:
        raise ConfigError(f"class {target!r} must look like 'package.module:ClassName' (or /path/file.py:ClassName)")
    obj = _import_module(module_name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {close}?" if close else f"; it defines {names[:12]}"
            raise ConfigError(f"class: {module_name!r} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    return obj


def build_module(target: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Import ``target`` (see :func:`import_object`) and call it with ``kwargs``; the result must be a module."""
    factory = import_object(target)
    if not callable(factory):
        raise ConfigError(f"class {target!r} is a {type(factory).__name__}, not a class or function")
    try:
        model = factory(**dict(kwargs or {}))
    except TypeError as err:
        raise ConfigError(f"class {target!r} could not be built with kwargs {dict(kwargs or {})}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"class {target!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _side(resolution: int | Sequence[int] | None) -> tuple[int, int] | None:
    if resolution is None:
        return None
    if isinstance(resolution, int):
        return (resolution, resolution)
    if len(resolution) != 2:
        raise ConfigError(f"resolution must be an int or [height, width], got {resolution!r}")
    return (int(resolution[0]), int(resolution[1]))


def custom_classifier(target: str, weights: str | os.PathLike[str] | None, kwargs: Mapping[str, Any] | None = None,
                      cam_layer: str | None = None, features_layer: str | None = None, head: str | None = None,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      resolution: int | Sequence[int] | None = None, num_classes: int | None = None,
                      ) -> ModuleClassifier:
    """The classifier of a ``type: module`` spec (see the module docstring) as a :class:`ModuleClassifier`.

    Args:
        target: import path of the class or factory, ``"package.module:Name"``.
        weights: local ``.safetensors`` / torch file, or None when the constructor loads its own weights.
        kwargs: constructor arguments.
        cam_layer: Grad-CAM module name (default ``layer4`` / ``features`` / ``stages`` when the net has one).
        features_layer: module whose output (flattened) are the features; default the last ``nn.Linear``'s input.
        head: the final ``nn.Linear``'s name when it is not the last one.
        mean, std: normalisation of (x + 1) / 2; default the stored ``normalize.*`` statistics, else none.
        resolution: the network's input side(s); None keeps the input size.
        num_classes: K; default the head's output size.

    Raises:
        ConfigError: an import path, constructor argument or module name that does not work (close names listed).
        CheckpointError: a missing weights file, or weights that do not fit the network (keys / shapes listed).
    """
    model = build_module(target, kwargs)
    if weights is not None and not Path(weights).is_file():
        raise CheckpointError(f"weights file {weights} not found (diffguard never downloads weights: give a local "
                              ".safetensors or .pt file, or weights: null when {target} loads its own)")
    if cam_layer is None:
        cam_layer = default_cam_layer(model)
        if cam_layer not in ("layer4", "features", "stages"):
            raise ConfigError(f"{target}: give cam_layer (the module Grad-CAM reads, usually the last convolutional "
                              f"block); top-level modules: {[n for n, _ in model.named_children()][:12]}")
    has_linear = any(isinstance(m, nn.Linear) for m in model.modules())
    if num_classes is None:
        if not has_linear and head is None:
            raise ConfigError(f"{target} has no nn.Linear head: give num_classes")
        num_classes = check_num_classes(model, head, None)
    clf = wrap_module(model, weights, num_classes=int(num_classes), resolution=_side(resolution),
                      mean=tuple(mean) if mean else None, std=tuple(std) if std else None,
                      default_stats=IDENTITY_STATS, cam_layer=cam_layer, head=head, what=f"{target} weights",
                      features_layer=features_layer)
    if has_linear or head:
        check_num_classes(clf.model, head, int(num_classes))
    return clf
