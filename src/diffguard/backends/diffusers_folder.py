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

import os
from pathlib import Path
from typing import Any

from diffguard.backends.diffusers_parts import DIT_CLASSES, find_scheduler, folder_kind, read_json, subfolder
from diffguard.backends.dit import dit_backend, latent_unet_backend
from diffguard.backends.loaders import ModelFolderError
from diffguard.backends.pixel_unet import PixelBackend


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
    root = Path(folder).expanduser()
    kind = folder_kind(root)
    if kind == "diffguard":
        return PixelBackend.from_folder(str(root))
    if kind == "pipeline":
        index = read_json(root / "model_index.json") if (root / "model_index.json").is_file() else {}
        if "text_encoder" in index or "tokenizer" in index:
            raise ModelFolderError(f"{root} is a text-conditional pipeline ({index.get('_class_name')}); diffguard "
                                   "needs an unconditional or class-conditional diffusion model")
        model_dir = subfolder(root, "transformer", "unet")
        if model_dir is None:
            raise ModelFolderError(f"{root}: model_index.json but no unet/ or transformer/ with a config.json")
        ae_dir = Path(vae).expanduser() if vae is not None else subfolder(root, "vae", "vqvae")
    else:
        model_dir = root
        ae_dir = Path(vae).expanduser() if vae is not None else None
    sched = find_scheduler(model_dir, scheduler)
    if read_json(model_dir / "config.json").get("_class_name") in DIT_CLASSES:
        ae_dir = ae_dir or subfolder(model_dir.parent, "vae")
        if ae_dir is None:
            raise ModelFolderError(f"{model_dir} is a DiT without a VAE: give vae: <AutoencoderKL folder>")
        return dit_backend(model_dir, ae_dir, sched)
    if ae_dir is not None:
        return latent_unet_backend(model_dir, ae_dir, sched, null_label)
    return PixelBackend.from_diffusers(str(model_dir), null_label=null_label, scheduler=sched)
