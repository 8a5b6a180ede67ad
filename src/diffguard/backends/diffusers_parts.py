"""Loading the parts of a diffusers model folder -- UNet, autoencoder, scheduler betas -- and telling which kind of
folder it is (:mod:`diffguard.backends.diffusers_folder` builds the backend from them). Nothing is downloaded."""


from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel, VQModel
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

    return DDPMScheduler.from_pretrained(scheduler_dir).alphas_cumprod.to(torch.float64)


def subfolder(root: Path, *names: str) -> Path | None:
    return next((root / n for n in names if has_config(root / n)), None)
