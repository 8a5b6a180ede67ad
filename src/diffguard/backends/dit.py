"""Latent-diffusion models saved as diffusers folders, loaded from local paths (``HF_HUB_OFFLINE``; nothing is
downloaded) into a :class:`~diffguard.backends.latent.LatentBackend`.

* :func:`load_dit` -- class-conditional DiT (Peebles & Xie 2023), e.g. the ``DiT-XL-2-256`` layout: ``transformer/``
  (``DiTTransformer2DModel``, or the older ``Transformer2DModel`` config), ``vae/`` (``AutoencoderKL``) and
  ``scheduler/``. DiT predicts a learned sigma too (8 output channels for 4 latent channels): only the first half,
  eps, is used. The class table has one extra row for classifier-free guidance: the null class is
  ``num_embeds_ada_norm`` (1000 for ImageNet DiT).
* :func:`load_latent_diffusers` -- a ``UNet2DModel`` on the latents of a ``VQModel`` (``vqvae/``) or ``AutoencoderKL``
  (``vae/``), e.g. the ``ldm-celebahq-256`` layout; unconditional, or class-conditional with a null class.

Latents are ``encode(x) * vae.config.scaling_factor`` (0.18215 for DiT's SD VAE; 1 for VQ models).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel
from torch import Tensor

from diffguard.backends.diffusers_parts import alphas_cumprod, load_autoencoder, load_unet
from diffguard.backends.latent import DiffusersAutoencoder, LatentBackend, UNetEps
from diffguard.backends.loaders import CheckpointError, ModelFolderError
from diffguard.errors import ConfigError


def _folder(folder: str | os.PathLike[str], parts: tuple[str, ...]) -> Path:
    root = Path(folder).expanduser()
    for sub in parts:
        if not (root / sub / "config.json").is_file() and not (root / sub / "scheduler_config.json").is_file():
            raise ModelFolderError(f"{root / sub} has no config: expected a diffusers folder with "
                                   f"{', '.join(p + '/' for p in parts)}")
    return root


class DiTEps:
    """A DiT transformer as an :data:`~diffguard.backends.latent.EpsModel`: eps = the first ``channels`` outputs."""

    def __init__(self, transformer: torch.nn.Module, channels: int):
        self.transformer, self.channels = transformer, channels

    def __call__(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            raise ValueError("DiT is class-conditional: the backend passes the null class for unconditional calls")
        out = self.transformer(z, timestep=t, class_labels=y.long()).sample
        return out[:, : self.channels]


def load_dit(folder: str | os.PathLike[str]) -> LatentBackend:
    """A DiT diffusers folder (``transformer/``, ``vae/``, ``scheduler/``) as a class-conditional latent backend
    with classifier-free guidance (null class = the number of classes)."""
    root = _folder(folder, ("transformer", "vae", "scheduler"))
    return dit_backend(root / "transformer", root / "vae", root / "scheduler")


def dit_backend(transformer_dir: Path, vae_dir: Path, scheduler_dir: Path) -> LatentBackend:
    """The DiT backend from its three diffusers folders (a pipeline's subfolders, or given one by one)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    transformer = DiTTransformer2DModel.from_pretrained(transformer_dir).float().eval()
    classes = transformer.config.num_embeds_ada_norm
    if classes is None:
        raise CheckpointError(f"{transformer_dir} is not class-conditional (no num_embeds_ada_norm)")
    table = transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings
    if table != classes + 1:
        raise CheckpointError(f"the DiT class table has {table} rows for {classes} classes: it was trained without "
                              "a null class, so classifier-free guidance is impossible")
    latent = transformer.config.in_channels
    if transformer.config.out_channels not in (latent, 2 * latent):
        raise CheckpointError(f"DiT outputs {transformer.config.out_channels} channels for {latent} latent "
                              "channels; expected eps or eps + learned sigma")
    vae, scale = load_autoencoder(vae_dir)
    if vae.config.latent_channels != latent:
        raise CheckpointError(f"the VAE has {vae.config.latent_channels} latent channels, DiT expects {latent}")
    return LatentBackend(DiffusersAutoencoder(vae), DiTEps(transformer, latent), alphas_cumprod(scheduler_dir),
                         classes, scale_factor=scale)


def load_latent_diffusers(folder: str | os.PathLike[str], null_label: int | None = None) -> LatentBackend:
    """A diffusers latent-diffusion folder: ``unet/`` (``UNet2DModel``), ``vqvae/`` (``VQModel``) or ``vae/``
    (``AutoencoderKL``), ``scheduler/``. ``null_label``: the null class of a class-conditional UNet."""
    root = Path(folder).expanduser()
    first = "vqvae" if (root / "vqvae" / "config.json").is_file() else "vae"
    root = _folder(root, ("unet", first, "scheduler"))
    return latent_unet_backend(root / "unet", root / first, root / "scheduler", null_label)


def latent_unet_backend(unet_dir: Path, ae_dir: Path, scheduler_dir: Path, null_label: int | None = None,
                        ) -> LatentBackend:
    """A UNet on the latents of the autoencoder in ``ae_dir`` (``AutoencoderKL`` or ``VQModel``)."""
    unet = load_unet(unet_dir)
    classes = unet.config.num_class_embeds
    if (null_label is None) != (classes is None) or (null_label is not None and not 0 <= null_label < classes):
        raise ConfigError(f"the UNet has {classes} class embeddings; pass null_label in [0, {classes}) for a "
                          "class-conditional model and None for an unconditional one")
    ae, scale = load_autoencoder(ae_dir)
    return LatentBackend(DiffusersAutoencoder(ae), UNetEps(unet, unet.config.in_channels),
                         alphas_cumprod(scheduler_dir), null_label, scale_factor=scale)
