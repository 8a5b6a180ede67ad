"""Saving and loading the models ``diffguard train`` makes (safetensors + JSON only; nothing is unpickled).

Layouts:

* classifier folder: ``config.json`` (architecture, classes and their names, input channels, resolution, input
  range, training record) + ``model.safetensors``;
* diffusion folder (diffusers layout): ``unet/`` (``UNet2DModel.save_pretrained``), ``scheduler/``
  (``DDPMScheduler`` config holding the beta schedule) and ``diffguard.json`` (number of classes, null label,
  resolution, channels, training record).

Folders made from fmnist6 are 1x28x28 with 6 classes; ``--data BENCHMARK.yaml`` makes them for any size up to 64 and
1 or 3 channels, recorded in the same keys.

The shipped weights live in ``diffguard/weights/``; :func:`shipped_path` finds them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from diffguard.data.fmnist6 import KNOWN_NAMES, RESOLUTION
from diffguard.errors import UserError
from diffguard.nets.resnet import SmallResNet

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {"classifier": "fmnist6-classifier", "diffusion": "fmnist6-diffusion"}


class ModelFileError(UserError):
    """A model folder that is missing, incomplete or does not match its configuration."""


def shipped_path(kind: str) -> Path:
    """Folder of a shipped model: ``"classifier"`` or ``"diffusion"``."""
    if kind not in SHIPPED:
        raise ValueError(f"unknown shipped model {kind!r}; choose from {sorted(SHIPPED)}")
    return WEIGHTS_DIR / SHIPPED[kind]


def shipped_or_path(folder: str | os.PathLike[str] | None) -> Path | None:
    """A model folder given as a path, or as the bare name of a folder shipped in the package (e.g.
    ``"fmnist6-diffusion-large"``) when no such path exists here; None stays None (the default model)."""
    if folder is None:
        return None
    path = Path(folder)
    if not path.exists() and len(path.parts) == 1 and (WEIGHTS_DIR / path).is_dir():
        return WEIGHTS_DIR / path
    return path


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFileError(f"{path} not found: point to a folder written by 'diffguard train ...'")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path} is not valid JSON ({err})") from err


def save_classifier(model: SmallResNet, out: Path, extra: dict[str, Any] | None = None,
                    resolution: int = RESOLUTION, class_names: Sequence[str] = KNOWN_NAMES) -> None:
    """Write ``out/config.json`` and ``out/model.safetensors`` (``resolution``: the square input side it was
    trained at; ``class_names``: one per logit)."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"arch": "SmallResNet", **model.config, "resolution": resolution, "input_range": [-1.0, 1.0],
              "class_names": list(class_names), **(extra or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_state(path: Path, model: torch.nn.Module) -> None:
    """Load a safetensors file into ``model`` strictly, with a clear error on missing keys or wrong shapes."""
    if not path.is_file():
        raise ModelFileError(f"weights file {path} not found")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for corrupt headers
        raise ModelFileError(f"{path} is not a readable safetensors file ({err})") from err
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own.keys() & state.keys() if state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ModelFileError(
            f"{path} does not match the model in its config: missing keys {missing[:5]}, unexpected keys "
            f"{unexpected[:5]}, wrong shapes {wrong[:5]}. Was the folder's config.json edited or mixed up?"
        )
    model.load_state_dict(state)


def classifier_config(folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A classifier folder's ``config.json`` (default: the shipped one): classes, channels, resolution, record."""
    return _read_json((Path(folder) if folder is not None else shipped_path("classifier")) / "config.json")


def load_classifier(folder: str | os.PathLike[str] | None = None) -> SmallResNet:
    """Load a classifier folder (default: the shipped one) in eval mode on the CPU."""
    folder = Path(folder) if folder is not None else shipped_path("classifier")
    cfg = _read_json(folder / "config.json")
    if cfg.get("arch") != "SmallResNet":
        raise ModelFileError(f"{folder}/config.json: unknown arch {cfg.get('arch')!r} (expected 'SmallResNet')")
    model = SmallResNet(cfg["num_classes"], cfg["in_channels"], cfg["width"], tuple(cfg["blocks"]))
    load_state(folder / "model.safetensors", model)
    return model.eval()


@dataclass(frozen=True)
class DiffusionModel:
    """A class-conditional pixel diffusion model with a null class.

    unet: diffusers ``UNet2DModel`` predicting eps; alphas_cumprod: (T,) float64 cumulative products of the
    stored beta schedule; null_label: the class index meaning "no class" (unconditional eps).
    """

    unet: torch.nn.Module
    alphas_cumprod: torch.Tensor
    num_classes: int
    null_label: int
    resolution: int
    channels: int
    info: dict[str, Any]


def save_diffusion(unet: torch.nn.Module, scheduler: Any, out: Path, info: dict[str, Any]) -> None:
    """Write the diffusers-layout folder: ``unet/``, ``scheduler/`` and ``diffguard.json``."""
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    scheduler.save_pretrained(out / "scheduler")
    (out / "diffguard.json").write_text(json.dumps(info, indent=2) + "\n")


def diffusion_info(folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A diffusion folder's ``diffguard.json`` (default: the shipped one): classes, null label, resolution, channels."""
    return _read_json((Path(folder) if folder is not None else shipped_path("diffusion")) / "diffguard.json")


def load_diffusion(folder: str | os.PathLike[str] | None = None) -> DiffusionModel:
    """Load a diffusion folder (default: the shipped one) offline, in eval mode on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    folder = Path(folder) if folder is not None else shipped_path("diffusion")
    info = _read_json(folder / "diffguard.json")
    for sub in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"):
        if not (folder / sub).is_file():
            raise ModelFileError(f"{folder / sub} not found: the folder is not a complete diffusion model")
    unet = UNet2DModel.from_config(UNet2DModel.load_config(folder / "unet"))
    load_state(folder / "unet" / "diffusion_pytorch_model.safetensors", unet)
    sched = DDPMScheduler.from_pretrained(folder / "scheduler")
    acp = sched.alphas_cumprod.double()
    return DiffusionModel(unet.eval(), acp, int(info["num_classes"]), int(info["null_label"]),
                          int(info["resolution"]), int(info["channels"]), info)


__all__ = ["DiffusionModel", "ModelFileError", "classifier_config", "diffusion_info", "load_classifier",
           "load_diffusion", "save_classifier", "save_diffusion", "shipped_path"]
