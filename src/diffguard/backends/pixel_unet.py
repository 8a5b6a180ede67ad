"""Pixel-space backend for a diffusers ``UNet2DModel`` (unconditional, or class-conditional with a null class)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from diffguard.backends.diffusers_parts import alphas_cumprod, find_scheduler, load_unet
from diffguard.backends.loaders import ModelFolderError
from diffguard.errors import ConfigError
from diffguard.model_files import load_diffusion
from diffguard.perf.accel import NetworkRunner, Precision


class PixelBackend:
    """Images in [-1, 1] are the diffusion space: ``encode`` and ``decode`` are the identity.

    Args:
        unet: a diffusers ``UNet2DModel`` predicting eps (first ``channels`` output channels are used, so
            learned-sigma models with 2C outputs work too).
        alphas_cumprod: (T,) alpha-bar of the training schedule.
        null_label: class index meaning "no class" for a class-conditional model; None for an unconditional one.
        channels: image channels.
        resolution: side of the square images the UNet was trained at (e.g. 256 for ADM); ``encode`` resizes
            other inputs to it (bilinear, align_corners=False, no antialias: the authors' pinned torchvision) and
            the detector resizes syntheses back to the input size. None (default) takes inputs as they are.
        autocast: "off" (default, float32 results unchanged), "bf16" or "fp16": run the UNet in mixed precision
            (its output is cast back to the input's dtype).
        channels_last: run the UNet in channels_last memory format (converts its weights in place).
        compile: wrap the UNet in ``torch.compile``.
    """

    differentiable_decode = True
    is_latent = False

    def __init__(self, unet: torch.nn.Module, alphas_cumprod: Tensor, null_label: int | None, channels: int,
                 resolution: int | None = None, autocast: Precision = "off", channels_last: bool = False,
                 compile: bool = False):
        self.unet = unet
        self._run = NetworkRunner(unet, autocast, channels_last, compile)
        self.alphas_cumprod = alphas_cumprod.double()
        self.null_label = null_label
        self.channels = channels
        self.resolution = resolution

    @classmethod
    def from_folder(cls, folder: str | None = None, **options: object) -> "PixelBackend":
        """Load a diffguard diffusion folder (default: the shipped fmnist6 model). options: autocast,
        channels_last, compile (see the class)."""

        m = load_diffusion(folder)
        return cls(m.unet, m.alphas_cumprod, m.null_label, m.channels, **options)

    @classmethod
    def from_diffusers(cls, folder: str, null_label: int | None = None, scheduler: str | None = None,
                       **options: object) -> "PixelBackend":
        """Load a diffusers folder with ``unet/`` and ``scheduler/``, or a bare ``UNet2DModel`` folder
        (``config.json``) whose scheduler is ``scheduler`` or a sibling ``scheduler/`` (see
        :mod:`diffguard.backends.diffusers_folder`; no download: HF_HUB_OFFLINE is set).

        null_label: the null class of a class-conditional UNet (required for one; None for an unconditional model).
        options: autocast, channels_last, compile (see the class).
        """


        root = Path(folder).expanduser()
        unet_dir = root / "unet" if (root / "unet" / "config.json").is_file() else root
        if not (unet_dir / "config.json").is_file():
            raise ModelFolderError(f"{root}: no unet/config.json or config.json: expected a diffusers folder with "
                                   "unet/ and scheduler/, or a bare UNet2DModel folder")
        acp = alphas_cumprod(find_scheduler(unet_dir, scheduler))
        unet = load_unet(unet_dir)
        classes = unet.config.num_class_embeds
        if null_label is not None and not (0 <= null_label < (classes or 0)):
            raise ConfigError(f"null_label {null_label} is outside the UNet's {classes} classes")
        if classes is not None and null_label is None:
            raise ConfigError(f"{unet_dir}: the UNet is class-conditional ({classes} class embeddings); give its "
                              f"null_label (the class meaning 'no class', often the last one, {classes - 1})")
        return cls(unet, acp, null_label, unet.config.in_channels, **options)

    def to(self, device: torch.device | str) -> "PixelBackend":
        """Move the UNet to ``device`` (the schedule stays a float64 CPU tensor, as the diffusion code expects);
        returns self."""
        self.unet.to(device)
        return self

    def encode(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) in [-1, 1] -> the same tensor (pixel space), resized to ``resolution`` when set."""
        if self.resolution is not None and tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=False)
        return x

    def decode(self, z: Tensor) -> Tensor:
        """z: (B, C, H, W) -> images in [-1, 1] (clamped)."""
        return z.clamp(-1.0, 1.0)

    def eps(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """Noise prediction. z: (B, C, H, W); t: (B,) int64 timesteps; y: (B,) labels (null_label allowed) or None."""
        if y is not None and self.null_label is None:
            raise ValueError("this diffusion model is unconditional: pass y=None")
        if y is None and self.null_label is not None:
            y = torch.full((z.shape[0],), self.null_label, dtype=torch.long, device=z.device)
        out = self._run(z, t, class_labels=y).sample
        return out[:, : self.channels].to(z.dtype)
