"""Latent-space backend: an autoencoder (VAE / VQ first stage) plus a noise-prediction network on its latents.

The diffusion loops only see latents; ``encode`` / ``decode`` move between images in [-1, 1] and that space.
Converters for original checkpoints (CompVis latent-diffusion, DiT) build one of these from local files.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor

from diffguard.devices import to_device
from diffguard.perf.accel import NetworkRunner, Precision


class Autoencoder(Protocol):
    """What the backend needs of a first stage: images (B, C, H, W) in [-1, 1] <-> latents (B, c, h, w)."""

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


EpsModel = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""(z (B, c, h, w), t (B,) int64, y (B,) labels or None) -> eps (B, c, h, w)."""


class LatentBackend:
    """Diffusion in the latent space of ``autoencoder``.

    Args:
        autoencoder: first stage with ``encode`` / ``decode`` (see :class:`Autoencoder`).
        eps_model: the noise prediction on latents; receives the null label for unconditional calls.
        alphas_cumprod: (T,) alpha-bar of the training schedule.
        null_label: class index meaning "no class" (e.g. 1000 for cin256), None for an unconditional model.
        scale_factor: latents are ``encode(x) * scale_factor`` (Stable-Diffusion-style VAEs; 1.0 for cin256-v2).
        differentiable_decode: whether gradients may flow through ``decode`` (classifier guidance in latent space).
    """

    is_latent = True

    def __init__(self, autoencoder: Autoencoder, eps_model: EpsModel, alphas_cumprod: Tensor,
                 null_label: int | None, scale_factor: float = 1.0, differentiable_decode: bool = True):
        self.autoencoder = autoencoder
        self.eps_model = eps_model
        self.alphas_cumprod = alphas_cumprod.double()
        self.null_label = null_label
        self.scale_factor = scale_factor
        self.differentiable_decode = differentiable_decode

    def to(self, device: torch.device | str) -> "LatentBackend":
        """Move every network of the autoencoder and the eps model to ``device`` (tensors they hold, such as a class
        table, are copied to the input's device on use); returns self."""

        to_device(self.autoencoder, torch.device(device))
        to_device(self.eps_model, torch.device(device))
        return self

    def encode(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) in [-1, 1] -> latents (B, c, h, w)."""
        return self.autoencoder.encode(x) * self.scale_factor

    def decode_for_grad(self, z: Tensor) -> Tensor:
        """Latents -> images, unclamped, differentiable (for classifier guidance)."""
        return self.autoencoder.decode(z / self.scale_factor)

    def decode(self, z: Tensor) -> Tensor:
        """Latents (B, c, h, w) -> images (B, C, H, W) clamped to [-1, 1]."""
        return self.decode_for_grad(z).clamp(-1.0, 1.0)

    def eps(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """Noise prediction; y None means the null label (or no label for an unconditional model)."""
        if y is not None and self.null_label is None:
            raise ValueError("this latent diffusion model is unconditional: pass y=None")
        if y is None and self.null_label is not None:
            y = torch.full((z.shape[0],), self.null_label, dtype=torch.long, device=z.device)
        return self.eps_model(z, t, y)


class DiffusersAutoencoder:
    """A diffusers ``AutoencoderKL`` (the posterior mode is the latent) or ``VQModel`` (pre-quantisation latents,
    quantised in ``decode`` as the original latent-diffusion code does) seen as an :class:`Autoencoder`."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.is_vq = hasattr(model, "quantize")

    def encode(self, x: Tensor) -> Tensor:
        out = self.model.encode(x)
        return out.latents if self.is_vq else out.latent_dist.mode()

    def decode(self, z: Tensor) -> Tensor:
        return self.model.decode(z).sample


class UNetEps:
    """A diffusers ``UNet2DModel`` as an :data:`EpsModel` (first ``channels`` outputs, for learned-sigma models).

    autocast ("off", "bf16", "fp16"), channels_last and compile: GPU execution options, see
    :class:`~diffguard.perf.accel.NetworkRunner` (off by default; the output is cast back to the input's dtype).
    """

    def __init__(self, unet: torch.nn.Module, channels: int, autocast: Precision = "off",
                 channels_last: bool = False, compile: bool = False):
        self.unet, self.channels = unet, channels
        self._run = NetworkRunner(unet, autocast, channels_last, compile)

    def __call__(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        return self._run(z, t, class_labels=y).sample[:, : self.channels].to(z.dtype)
