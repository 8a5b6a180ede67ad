"""Diffusion model folders recognised from their files, so that a model spec may be just a path.

=============================================================== ===============================================
what the folder holds                                           backend
=============================================================== ===============================================
``diffguard.json`` (+ ``unet/``, ``scheduler/``)                the ``diffguard train`` / shipped layout, pixel
``model_index.json`` and/or subfolders (a diffusers pipeline):
  ``transformer/`` + ``vae/`` + ``scheduler/``                  DiT, latent (:func:`~diffguard.backends.dit.load_dit`)
  ``unet/`` + ``vae/`` or ``vqvae/`` + ``scheduler/``           latent UNet
  ``unet/`` + ``scheduler/``                                    pixel UNet
``config.json`` with ``_class_name`` (a bare diffusers model):
  ``UNet2DModel`` / ``UNet2DConditionModel``                    pixel UNet (latent with ``vae:``)
  ``DiTTransformer2DModel`` / ``Transformer2DModel``            DiT (the VAE from ``vae:`` or a sibling ``vae/``)
=============================================================== ===============================================

A bare model's scheduler comes from ``scheduler:`` (a folder with ``scheduler_config.json`` or the file itself), else
a sibling ``scheduler/`` folder, else a ``scheduler_config.json`` beside the model's ``config.json``. Only the beta
schedule is read from it (``alphas_cumprod``). A ``UNet2DConditionModel`` is accepted when it has no cross-attention
(class labels through ``num_class_embeds``); text-conditional pipelines are refused. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffguard.backends.loaders import ModelFolderError

UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
DIT_CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")
LOOKED_FOR = ("diffguard.json (a folder made by 'diffguard train', like the shipped fmnist6 model)",
              "model_index.json or unet/ / transformer/ subfolders beside scheduler/ (a diffusers pipeline)",
              f"config.json with _class_name one of {list(UNET_CLASSES + DIT_CLASSES)} (a bare diffusers model)")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict; a missing or broken file raises :class:`ModelFolderError` naming it."""
    if not path.is_file():
        raise ModelFolderError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{path} is not valid JSON ({err})") from None


def has_config(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def folder_kind(folder: str | os.PathLike[str]) -> str:
    """"diffguard", "pipeline" or "model" (see the module docstring); anything else raises, listing what was
    looked for and what the folder holds."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        what = "a file, not a folder" if root.exists() else "not found"
        raise ModelFolderError(f"diffusion model {root}: {what}. Give a model folder, or a spec with a type for a "
                               "checkpoint file (adm, ddim_cifar, compvis_ldm)")
    if (root / "diffguard.json").is_file():
        return "diffguard"
    if (root / "model_index.json").is_file() or has_config(root / "unet") or has_config(root / "transformer"):
        return "pipeline"
    if has_config(root) and read_json(root / "config.json").get("_class_name") in UNET_CLASSES + DIT_CLASSES:
        return "model"
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
    raise ModelFolderError(f"{root} is not a diffusion model folder diffguard recognises. Looked for: "
                           + "; ".join(LOOKED_FOR) + f". Found: {found or 'nothing'}")


class ContextFreeUNet(nn.Module):
    """A diffusers ``UNet2DConditionModel`` without cross-attention, called like a ``UNet2DModel``:
    ``forward(x, t, class_labels=None)`` passes no context (``encoder_hidden_states=None``)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    @property
    def config(self) -> Any:
        return self.unet.config

    def forward(self, sample: Tensor, timestep: Tensor, class_labels: Tensor | None = None) -> Any:
        return self.unet(sample, timestep, encoder_hidden_states=None, class_labels=class_labels)


def load_unet(folder: Path) -> nn.Module:
    """A ``UNet2DModel`` (or a cross-attention-free ``UNet2DConditionModel``) folder, fp32, eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import UNet2DConditionModel, UNet2DModel

    name = read_json(folder / "config.json").get("_class_name")
    if name == "UNet2DConditionModel":
        unet = UNet2DConditionModel.from_pretrained(folder)
        blocks = [*unet.config.down_block_types, *unet.config.up_block_types, str(unet.config.mid_block_type)]
        if any("CrossAttn" in b for b in blocks):
            raise ModelFolderError(f"{folder}: this UNet2DConditionModel attends to a context (text or class "
                                   "embeddings) that the folder does not provide; diffguard needs an unconditional "
                                   "or class-label UNet (CompVis class-conditional checkpoints: type compvis_ldm)")
        return ContextFreeUNet(unet.float().eval())
    if name not in (None, "UNet2DModel"):
        raise ModelFolderError(f"{folder}/config.json describes a {name}, not a UNet2DModel")
    return UNet2DModel.from_pretrained(folder).float().eval()


def load_autoencoder(folder: Path) -> tuple[nn.Module, float]:
    """(``AutoencoderKL`` or ``VQModel`` from ``folder``, latent scale factor: the config's for KL, 1 for VQ)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import AutoencoderKL, VQModel

    name = read_json(folder / "config.json").get("_class_name")
    if name == "VQModel" or (name is None and folder.name == "vqvae"):
        return VQModel.from_pretrained(folder).float().eval(), 1.0
    if name not in (None, "AutoencoderKL"):
        raise ModelFolderError(f"{folder}/config.json describes a {name}; expected AutoencoderKL or VQModel")
    ae = AutoencoderKL.from_pretrained(folder).float().eval()
    return ae, float(getattr(ae.config, "scaling_factor", 1.0))


def find_scheduler(model_dir: Path, given: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the scheduler config of the model in ``model_dir`` (see the module docstring)."""
    candidates = [Path(given).expanduser()] if given is not None else [model_dir.parent / "scheduler", model_dir]
    for c in candidates:
        if c.is_file() and c.name.endswith(".json"):
            return c.parent
        if (c / "scheduler_config.json").is_file():
            return c
    raise ModelFolderError(f"no scheduler_config.json for the model in {model_dir} (looked in "
                           f"{[str(c) for c in candidates]}); give scheduler: <folder with scheduler_config.json>")


def alphas_cumprod(scheduler_dir: Path) -> Tensor:
    """(T,) alpha-bar of the beta schedule in ``scheduler_dir`` (any diffusers DDPM-family scheduler config)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(scheduler_dir).alphas_cumprod.to(torch.float64)


def _subfolder(root: Path, *names: str) -> Path | None:
    return next((root / n for n in names if has_config(root / n)), None)


def load_diffusion_folder(folder: str | os.PathLike[str], null_label: int | None = None,
                          scheduler: str | os.PathLike[str] | None = None, vae: str | os.PathLike[str] | None = None,
                          ) -> Any:
    """The backend of any recognised diffusion folder (see the module docstring).

    Args:
        folder: the folder.
        null_label: the null class of a class-conditional UNet (diffguard.json and DiT folders know theirs).
        scheduler: the scheduler folder (or ``scheduler_config.json``) when it is not where it is looked for.
        vae: the autoencoder folder of a bare latent model (default: a sibling ``vae/`` for DiT).
    """
    from diffguard.backends.dit import dit_backend, latent_unet_backend
    from diffguard.backends.pixel import PixelBackend

    root = Path(folder).expanduser()
    kind = folder_kind(root)
    if kind == "diffguard":
        return PixelBackend.from_folder(str(root))
    if kind == "pipeline":
        index = read_json(root / "model_index.json") if (root / "model_index.json").is_file() else {}
        if "text_encoder" in index or "tokenizer" in index:
            raise ModelFolderError(f"{root} is a text-conditional pipeline ({index.get('_class_name')}); diffguard "
                                   "needs an unconditional or class-conditional diffusion model")
        model_dir = _subfolder(root, "transformer", "unet")
        if model_dir is None:
            raise ModelFolderError(f"{root}: model_index.json but no unet/ or transformer/ with a config.json")
        ae_dir = Path(vae).expanduser() if vae is not None else _subfolder(root, "vae", "vqvae")
    else:
        model_dir = root
        ae_dir = Path(vae).expanduser() if vae is not None else None
    sched = find_scheduler(model_dir, scheduler)
    if read_json(model_dir / "config.json").get("_class_name") in DIT_CLASSES:
        ae_dir = ae_dir or _subfolder(model_dir.parent, "vae")
        if ae_dir is None:
            raise ModelFolderError(f"{model_dir} is a DiT without a VAE: give vae: <AutoencoderKL folder>")
        return dit_backend(model_dir, ae_dir, sched)
    if ae_dir is not None:
        return latent_unet_backend(model_dir, ae_dir, sched, null_label)
    return PixelBackend.from_diffusers(str(model_dir), null_label=null_label, scheduler=sched)
