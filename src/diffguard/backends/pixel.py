"""Pixel-space backend for a diffusers ``UNet2DModel`` (unconditional, or class-conditional with a null class)."""

from __future__ import annotations

import torch
from torch import Tensor


class PixelBackend:
    """Images in [-1, 1] are the diffusion space: ``encode`` and ``decode`` are the identity.

    Args:
        unet: a diffusers ``UNet2DModel`` predicting eps (first ``channels`` output channels are used, so
            learned-sigma models with 2C outputs work too).
        alphas_cumprod: (T,) alpha-bar of the training schedule.
        null_label: class index meaning "no class" for a class-conditional model; None for an unconditional one.
        channels: image channels.
    """

    differentiable_decode = True
    is_latent = False

    def __init__(self, unet: torch.nn.Module, alphas_cumprod: Tensor, null_label: int | None, channels: int):
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod.double()
        self.null_label = null_label
        self.channels = channels

    @classmethod
    def from_folder(cls, folder: str | None = None) -> "PixelBackend":
        """Load a diffguard diffusion folder (default: the shipped fmnist6 model)."""
        from diffguard.models import load_diffusion

        m = load_diffusion(folder)
        return cls(m.unet, m.alphas_cumprod, m.null_label, m.channels)

    def encode(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) in [-1, 1] -> the same tensor (pixel space)."""
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
        out = self.unet(z, t, class_labels=y).sample
        return out[:, : self.channels]
