"""Model specs of a run config mapped onto the loaders: the classifier-under-protection and the diffusion backend.

A spec is a folder path (the fmnist6 format: shipped or made by ``diffguard train``), ``None`` (the shipped
fmnist6 model), or a mapping with a ``type`` and the loader's keyword arguments, e.g.::

    classifier: {type: torchvision, arch: resnet50, weights: /ckpt/resnet50-0676ba61.pth, resolution: 224}
    diffusion:  {type: adm, checkpoint: /ckpt/256x256_diffusion_uncond.pt, resolution: 256}

Classifier types: ``fmnist6`` (folder), ``torchvision``, ``timm``, ``openood_resnet18``.
Diffusion types: ``fmnist6`` (folder), ``diffusers`` (UNet2DModel folder), ``adm`` (guided-diffusion ``.pt``),
``ddim_cifar`` (DiffNB / DDIM-repository ``.ckpt``), ``compvis_ldm`` (latent-diffusion ``.ckpt``), ``dit`` and
``latent_diffusers`` (diffusers folders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from diffguard.registry import Registry

CLASSIFIER_TYPES: Registry[Any] = Registry("classifier type")
DIFFUSION_TYPES: Registry[Any] = Registry("diffusion type")
ModelSpec = str | Mapping[str, Any] | None


@CLASSIFIER_TYPES.register("fmnist6")
def _fmnist6_classifier(folder: str | None = None) -> Any:
    from diffguard.classify.base import fmnist6_classifier

    return fmnist6_classifier(folder)


@CLASSIFIER_TYPES.register("torchvision")
def _torchvision(arch: str, weights: str, **kw: Any) -> Any:
    from diffguard.classify.torchvision import torchvision_classifier

    return torchvision_classifier(arch, weights, **kw)


@CLASSIFIER_TYPES.register("timm")
def _timm(arch: str, weights: str, **kw: Any) -> Any:
    from diffguard.classify.timm import timm_classifier

    return timm_classifier(arch, weights, **kw)


@CLASSIFIER_TYPES.register("openood_resnet18")
def _openood(weights: str, **kw: Any) -> Any:
    from diffguard.classify.openood import openood_resnet18_32x32

    return openood_resnet18_32x32(weights, **kw)


@DIFFUSION_TYPES.register("fmnist6")
def _fmnist6_backend(folder: str | None = None) -> Any:
    from diffguard.backends.pixel import PixelBackend

    return PixelBackend.from_folder(folder)


@DIFFUSION_TYPES.register("diffusers")
def _diffusers(folder: str, null_label: int | None = None) -> Any:
    from diffguard.backends.pixel import PixelBackend

    return PixelBackend.from_diffusers(folder, null_label=null_label)


@DIFFUSION_TYPES.register("adm")
def _adm(checkpoint: str, **kw: Any) -> Any:
    from diffguard.backends.adm import adm_backend

    return adm_backend(checkpoint, **kw)


@DIFFUSION_TYPES.register("ddim_cifar")
def _ddim_cifar(checkpoint: str, null_label: int | None = None, **kw: Any) -> Any:
    from diffguard.backends.ddim_cifar import load_ddim_cifar

    return load_ddim_cifar(checkpoint, null_label=null_label, **kw)


@DIFFUSION_TYPES.register("compvis_ldm")
def _compvis(checkpoint: str, config: str | None = None, **kw: Any) -> Any:
    from diffguard.backends.compvis_ldm import load_compvis_ldm

    return load_compvis_ldm(checkpoint, config, **kw)


@DIFFUSION_TYPES.register("dit")
def _dit(folder: str) -> Any:
    from diffguard.backends.dit import load_dit

    return load_dit(folder)


@DIFFUSION_TYPES.register("latent_diffusers")
def _latent(folder: str, null_label: int | None = None) -> Any:
    from diffguard.backends.dit import load_latent_diffusers

    return load_latent_diffusers(folder, null_label=null_label)


def _build(registry: Registry[Any], spec: ModelSpec) -> Any:
    if spec is None or isinstance(spec, (str, Path)):
        return registry.get("fmnist6")(None if spec is None else str(spec))
    kwargs = dict(spec)
    kind = kwargs.pop("type", None)
    if kind is None:
        raise ValueError(f"model spec {dict(spec)} needs a 'type': one of {registry.list()}")
    return registry.get(kind)(**kwargs)


def build_classifier(spec: ModelSpec) -> Any:
    """The classifier adapter described by ``spec`` (see the module docstring)."""
    return _build(CLASSIFIER_TYPES, spec)


def build_backend(spec: ModelSpec) -> Any:
    """The diffusion backend described by ``spec`` (see the module docstring)."""
    return _build(DIFFUSION_TYPES, spec)


def spec_files(spec: ModelSpec, default: Path) -> list[Path]:
    """The files and folders a spec reads (for the run manifest's hashes); ``default`` for ``None``."""
    if spec is None:
        return [default]
    if isinstance(spec, (str, Path)):
        return [Path(spec)]
    return [Path(v) for k, v in spec.items() if k != "type" and isinstance(v, str) and Path(v).exists()]
