"""Model specs of a run config mapped onto the loaders: the classifier-under-protection and the diffusion backend.

A spec is ``None`` (the shipped fmnist6 model), a folder path (recognised from its files, see below), or a mapping
with a ``type`` and the loader's keyword arguments::

    classifier: {type: torchvision, arch: resnet50, weights: /ckpt/resnet50-0676ba61.pth, resolution: 224}
    classifier: {type: module, class: "my_pkg.nets:MyNet", kwargs: {width: 64}, weights: /ckpt/mynet.safetensors,
                 cam_layer: layer4, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], resolution: 32}
    diffusion:  {type: adm, checkpoint: /ckpt/256x256_diffusion_uncond.pt, resolution: 256}
    diffusion:  /ckpt/DiT-XL-2-256                    # a folder: the kind is read from its files
    diffusion:  {type: diffusers, folder: /ckpt/my-unet, scheduler: /ckpt/scheduler, null_label: 10}

Classifier types: ``fmnist6`` / ``shipped`` (a ``diffguard train`` folder, default the shipped one), ``module`` (any
``nn.Module`` by import path, :mod:`diffguard.classify.custom`), ``torchvision``, ``timm``, ``openood_resnet18``.
A classifier folder is recognised by its ``config.json``: ``arch`` (the ``diffguard train`` format) or
``architecture`` (a timm folder with ``model.safetensors``).

Diffusion types: ``fmnist6`` / ``shipped``, ``diffusers`` (any folder :mod:`diffguard.backends.diffusers_folder` recognises:
the ``diffguard train`` layout, a diffusers pipeline -- pixel UNet, latent UNet or DiT -- or a bare diffusers model),
``adm`` (guided-diffusion ``.pt``), ``ddim_cifar`` (DiffNB / DDIM-repository ``.ckpt``), ``compvis_ldm``
(latent-diffusion ``.ckpt``), ``dit`` and ``latent_diffusers`` (diffusers folders of that one kind). A folder path
spec is the same as ``{type: diffusers, folder: PATH}``.

Every loader reads local files only and fails with a :class:`~diffguard.errors.UserError` naming the file.
"""

from __future__ import annotations

import difflib
import inspect
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from diffguard.backends.adm import adm_backend
from diffguard.backends.compvis_ldm import load_compvis_ldm
from diffguard.backends.ddim_cifar import load_ddim_cifar
from diffguard.backends.diffusers_folder import load_diffusion_folder
from diffguard.backends.diffusers_parts import read_json
from diffguard.backends.dit import load_dit, load_latent_diffusers
from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import fmnist6_classifier
from diffguard.classify.custom import custom_classifier, source_file
from diffguard.classify.openood import openood_resnet18_32x32
from diffguard.classify.timm import timm_classifier
from diffguard.classify.torchvision import torchvision_classifier
from diffguard.errors import ConfigError
from diffguard.model_files import shipped_or_path
from diffguard.registry import Registry

CLASSIFIER_TYPES: Registry[Any] = Registry("classifier type")
DIFFUSION_TYPES: Registry[Any] = Registry("diffusion type")
ModelSpec = str | os.PathLike[str] | Mapping[str, Any] | None


@CLASSIFIER_TYPES.register("shipped")
@CLASSIFIER_TYPES.register("fmnist6")
def _fmnist6_classifier(folder: str | None = None) -> Any:
    """``folder``: a ``diffguard train`` folder or the name of one shipped in the package; None: the default."""

    return fmnist6_classifier(shipped_or_path(folder))


@CLASSIFIER_TYPES.register("module")
def _module(**spec: Any) -> Any:
    if "class" not in spec:
        raise ConfigError(f"classifier spec type 'module' needs class: 'package.module:ClassName' (got keys "
                          f"{sorted(spec)})")
    if "weights" not in spec:
        raise ConfigError("classifier spec type 'module' needs weights: a local .safetensors / .pt file (or "
                          "weights: null when the constructor loads its own)")
    target = spec.pop("class")
    return call_with_spec(custom_classifier, {"target": target, **spec}, "classifier spec type 'module'")


@CLASSIFIER_TYPES.register("torchvision")
def _torchvision(arch: str, weights: str, **kw: Any) -> Any:
    return torchvision_classifier(arch, weights, **kw)


@CLASSIFIER_TYPES.register("timm")
def _timm(arch: str, weights: str, **kw: Any) -> Any:
    return timm_classifier(arch, weights, **kw)


@CLASSIFIER_TYPES.register("openood_resnet18")
def _openood(weights: str, **kw: Any) -> Any:
    return openood_resnet18_32x32(weights, **kw)


@DIFFUSION_TYPES.register("shipped")
@DIFFUSION_TYPES.register("fmnist6")
def _fmnist6_backend(folder: str | None = None) -> Any:
    """``folder``: a ``diffguard train`` folder, or the name of one shipped in the package
    (``fmnist6-diffusion-large``); None: the shipped default."""

    return PixelBackend.from_folder(shipped_or_path(folder))


@DIFFUSION_TYPES.register("diffusers")
def _diffusers(folder: str, null_label: int | None = None, scheduler: str | None = None,
               vae: str | None = None) -> Any:
    return load_diffusion_folder(folder, null_label=null_label, scheduler=scheduler, vae=vae)


@DIFFUSION_TYPES.register("adm")
def _adm(checkpoint: str, **kw: Any) -> Any:
    return adm_backend(checkpoint, **kw)


@DIFFUSION_TYPES.register("ddim_cifar")
def _ddim_cifar(checkpoint: str, null_label: int | None = None, **kw: Any) -> Any:
    return load_ddim_cifar(checkpoint, null_label=null_label, **kw)


@DIFFUSION_TYPES.register("compvis_ldm")
def _compvis(checkpoint: str, config: str | None = None, **kw: Any) -> Any:
    return load_compvis_ldm(checkpoint, config, **kw)


@DIFFUSION_TYPES.register("dit")
def _dit(folder: str) -> Any:
    return load_dit(folder)


@DIFFUSION_TYPES.register("latent_diffusers")
def _latent(folder: str, null_label: int | None = None) -> Any:
    return load_latent_diffusers(folder, null_label=null_label)


def call_with_spec(factory: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> Any:
    """``factory(**kwargs)`` with the spec's keys checked first: a missing required key or an unknown key raises
    :class:`ConfigError` listing the accepted keys (close matches first)."""
    params = inspect.signature(factory).parameters
    accepted = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    required = [n for n, p in params.items() if p.default is p.empty and n in accepted]
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=2)
                hint = f" Did you mean {close}?" if close else ""
                shown = [a for a in accepted if a != "target"]  # the module type's 'class' key
                raise ConfigError(f"{what}: unknown key {key!r}.{hint} Accepted: {shown}")
    missing = [n for n in required if n not in kwargs]
    if missing:
        raise ConfigError(f"{what} needs key(s) {missing}; accepted: {accepted}")
    return factory(**kwargs)


def _classifier_folder(folder: Path) -> Any:
    """A classifier folder recognised from its ``config.json`` (see the module docstring)."""

    if not folder.is_dir():
        raise ConfigError(f"classifier {folder}: {'a file, not a folder' if folder.exists() else 'not found'}. "
                          "Give a model folder, or a spec with a type (torchvision, timm, openood_resnet18, module)")
    cfg = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if "arch" in cfg:
        return _fmnist6_classifier(str(folder))
    if "architecture" in cfg:
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()),
                       folder / "model.safetensors")
        pcfg = cfg.get("pretrained_cfg", {})
        side = pcfg.get("input_size", [3, 224, 224])[1:]
        return timm_classifier(cfg["architecture"], weights, num_classes=cfg.get("num_classes", 1000),
                               resolution=tuple(side), mean=pcfg.get("mean"), std=pcfg.get("std"))
    if "_class_name" in cfg or (folder / "diffguard.json").is_file() or (folder / "model_index.json").is_file():
        raise ConfigError(f"{folder} is a diffusion model folder; give it as the diffusion spec, not the classifier")
    found = sorted(p.name for p in folder.iterdir())[:12]
    raise ConfigError(f"{folder} is not a classifier folder diffguard recognises. Looked for config.json with 'arch' "
                      "(a 'diffguard train' classifier) or 'architecture' (a timm folder with model.safetensors). "
                      f"Found: {found or 'nothing'}. Other classifiers: a spec with type torchvision, timm, "
                      "openood_resnet18 or module")


def _build(registry: Registry[Any], spec: ModelSpec, kind: str) -> Any:
    if isinstance(spec, (str, os.PathLike)):
        folder = Path(spec).expanduser()
        return _classifier_folder(folder) if kind == "classifier" else _diffusers(str(folder))
    if spec is None:
        return registry.get("fmnist6")()
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{kind} spec must be a folder path, a mapping with a type, or null; got {spec!r}")
    kwargs = dict(spec)
    name = kwargs.pop("type", None)
    if name is None:
        raise ConfigError(f"{kind} spec {dict(spec)} needs a 'type': one of {registry.list()} (or give just a "
                          "folder path)")
    factory = registry.get(name)
    return call_with_spec(factory, kwargs, f"{kind} spec type {name!r}")


def build_classifier(spec: ModelSpec) -> Any:
    """The classifier adapter described by ``spec`` (see the module docstring)."""
    return _build(CLASSIFIER_TYPES, spec, "classifier")


def build_backend(spec: ModelSpec) -> Any:
    """The diffusion backend described by ``spec`` (see the module docstring)."""
    return _build(DIFFUSION_TYPES, spec, "diffusion")


def spec_files(spec: ModelSpec, default: Path) -> list[Path]:
    """The files and folders a spec reads (for the run manifest's hashes); ``default`` for ``None``. A ``type:
    module`` spec adds the source file of its class, so an edited network definition is noticed too."""
    if spec is None:
        return [default]
    if isinstance(spec, (str, os.PathLike)):
        return [Path(spec)]

    by_name = spec.get("type") in ("shipped", "fmnist6")  # only these types resolve a bare shipped folder name
    found = [shipped_or_path(v) if by_name else Path(v) for k, v in spec.items() if k != "type" and isinstance(v, str)]
    files = [p for p in found if p is not None and p.exists()]
    if spec.get("type") == "module" and isinstance(spec.get("class"), str):  # the network's code, too

        src = source_file(spec["class"])
        files += [src] if src is not None and src not in files else []
    return files
