"""DDIM-repository (ermongroup/ddim) UNets, and DiffNB's class-conditional CIFAR model, as a diffusers ``UNet2DModel``.

DiffNB (luping-liu/DiffOOD, ``network/ddim/ddim.py``) reuses the ``Model`` of the DDIM repository and adds one
class embedding ``label_emb`` with ``num_classes + 1`` rows (the last row is the null label used for classifier-free
guidance), added to the timestep embedding after its second dense layer. DiffGuard's CIFAR-10 results reuse that
checkpoint (``config/ddim_cifar10_cond.yml``: ch 128, ch_mult (1, 2, 2, 2), 2 ResBlocks per level, attention at
16 px, linear betas 1e-4 .. 0.02 over 1000 steps). ``UNet2DModel`` expresses this architecture exactly:

================================================ ==========================================================
original key                                     UNet2DModel key
================================================ ==========================================================
``temb.dense.0`` / ``temb.dense.1``              ``time_embedding.linear_1`` / ``linear_2``
``label_emb``                                    ``class_embedding`` (``num_class_embeds`` = rows)
``conv_in`` / ``norm_out`` / ``conv_out``        ``conv_in`` / ``conv_norm_out`` / ``conv_out``
``down.l.block.r`` / ``down.l.attn.r``           ``down_blocks.l.resnets.r`` / ``attentions.r``
``down.l.downsample.conv``                       ``down_blocks.l.downsamplers.0.conv`` (pad right/bottom)
``mid.block_1`` / ``mid.attn_1`` / ``block_2``   ``mid_block.resnets.0`` / ``attentions.0`` / ``resnets.1``
``up.l.block.r`` / ``up.l.attn.r``               ``up_blocks.(L-1-l).resnets.r`` / ``attentions.r``
``up.l.upsample.conv``                           ``up_blocks.(L-1-l).upsamplers.0.conv``
ResBlock ``temb_proj``, ``nin_shortcut``         ``time_emb_proj``, ``conv_shortcut`` (1x1)
attention ``norm``, ``q``/``k``/``v``, ``proj_out``  ``group_norm``, ``to_q``/``to_k``/``to_v``, ``to_out.0``
================================================ ==========================================================

The timestep embedding is [sin, cos] of t * 10000^(-i / (C/2 - 1)) (``flip_sin_to_cos=False, freq_shift=1``),
GroupNorms have 32 groups and eps 1e-6, attention is single-head with scale C^-1/2, and the down-sampling conv pads
one pixel on the right and bottom (``downsample_padding=0``). The original ``up`` list is indexed by level
(``up[0]`` is the full-resolution level, run last); diffusers' ``up_blocks`` are in execution order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from diffusers import UNet2DModel
from torch import Tensor

from diffguard.backends.loaders import CheckpointError, load_exact, read_checkpoint
from diffguard.backends.pixel_unet import PixelBackend

_RES = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
        "nin_shortcut": "conv_shortcut"}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_TOP = {"temb.dense.0": "time_embedding.linear_1", "temb.dense.1": "time_embedding.linear_2",
        "label_emb": "class_embedding", "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}


@dataclass(frozen=True)
class DdimConfig:
    """The architecture of a DDIM-repository ``Model`` (DiffNB variant included).

    Args:
        in_channels, out_ch, ch: image channels, output channels, base width (``ch`` in the YAML).
        ch_mult: width multiplier per level; ``ch_mult[0]`` must be 1 for ``UNet2DModel``.
        num_res_blocks: ResBlocks per level on the way down (one more per level on the way up).
        attention_levels: indices of the levels with self-attention (level l runs at image_size / 2**l).
        num_classes: DiffNB's ``num_classes`` (the class embedding has num_classes + 1 rows, the last one is the
            null label); 0 for an unconditional model.
        image_size: training resolution.
    """

    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1,)
    num_classes: int = 10
    image_size: int = 32

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "DdimConfig":
        """From a parsed YAML: DiffNB's whole config (``Model`` section) or ermongroup's (``model`` + ``data``),
        or the model section alone."""
        model = dict(cfg.get("Model", cfg.get("model", cfg)))
        data = cfg.get("data", {})
        size = int(model.get("image_size", data.get("image_size", 32)))
        mult = tuple(int(m) for m in model["ch_mult"])
        if not model.get("resamp_with_conv", True):
            raise CheckpointError("resamp_with_conv: False (average-pool / plain nearest resampling) has no "
                                  "UNet2DModel equivalent; only resamp_with_conv: True is supported")
        if model.get("type", "simple") != "simple":
            raise CheckpointError(f"model type {model.get('type')!r} is not supported (only 'simple')")
        res = {int(r) for r in model["attn_resolutions"]}
        return cls(in_channels=int(model.get("in_channels", data.get("channels", 3))), out_ch=int(model["out_ch"]),
                   ch=int(model["ch"]), ch_mult=mult, num_res_blocks=int(model["num_res_blocks"]),
                   attention_levels=tuple(i for i in range(len(mult)) if size // 2**i in res),
                   num_classes=int(model.get("num_classes", 0)), image_size=size)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "DdimConfig":
        """From a YAML file such as DiffNB's ``config/ddim_cifar10_cond.yml``."""

        if not Path(path).is_file():
            raise CheckpointError(f"DDIM config file {path} not found (give DiffNB's config/*.yml, or no config: the "
                                  "architecture is then read from the weights)")
        with open(path) as fh:
            return cls.from_mapping(yaml.safe_load(fh))


def infer_ddim_config(state: Mapping[str, Tensor], image_size: int = 32) -> DdimConfig:
    """Read the architecture from an original-layout state dict (the resolution cannot be read: ``image_size``)."""
    if any(k not in state for k in ("conv_in.weight", "temb.dense.0.weight", "down.0.block.0.conv1.weight")):
        hint = ""
        if "input_blocks.0.0.weight" in state:
            hint = " It looks like a guided-diffusion (ADM) checkpoint: use type 'adm'."
        elif "time_embedding.linear_1.weight" in state:
            hint = " It looks like a diffusers UNet: save it as a diffusers folder and use type 'diffusers'."
        raise CheckpointError("not a DDIM-repository Model state dict: conv_in.weight / temb.dense.0.weight / "
                              f"down.0.block.0.conv1.weight missing (first keys: {list(state)[:4]}).{hint}")
    ch = state["conv_in.weight"].shape[0]
    levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down."))
    nrb = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("down.0.block."))
    mult = tuple(state[f"down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels))
    if levels > 1 and "down.0.downsample.conv.weight" not in state:
        raise CheckpointError("this checkpoint has no down.0.downsample.conv (resamp_with_conv: False), which "
                              "UNet2DModel cannot express")
    if "logvar" in state:
        raise CheckpointError("this checkpoint has a 'logvar' parameter (model type 'bayesian'); only type "
                              "'simple' is supported")
    emb = state.get("label_emb.weight")
    return DdimConfig(in_channels=state["conv_in.weight"].shape[1], out_ch=state["conv_out.weight"].shape[0], ch=ch,
                      ch_mult=mult, num_res_blocks=nrb,
                      attention_levels=tuple(i for i in range(levels) if f"down.{i}.attn.0.q.weight" in state),
                      num_classes=0 if emb is None else emb.shape[0] - 1, image_size=image_size)


def diffusers_config(cfg: DdimConfig) -> dict[str, Any]:
    """``UNet2DModel`` keyword arguments for the architecture (raises if diffusers cannot express it)."""
    if cfg.ch_mult[0] != 1:
        raise CheckpointError(f"ch_mult {cfg.ch_mult}: DDIM models with ch_mult[0] != 1 have no UNet2DModel "
                              "equivalent (their first skip connection has ch channels, not ch * ch_mult[0])")
    levels = range(len(cfg.ch_mult))
    return dict(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_ch,
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(levels)),
        attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6, resnet_time_scale_shift="default",
        downsample_type="conv", upsample_type="conv", downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        act_fn="silu", num_class_embeds=cfg.num_classes + 1 if cfg.num_classes else None, add_attention=True,
        dropout=0.0,
    )


def _module_map(cfg: DdimConfig) -> dict[str, tuple[str, dict[str, str] | None]]:
    """Original module prefix -> (diffusers prefix, sub-module renames; None for a plain conv/linear)."""
    n = len(cfg.ch_mult)
    out: dict[str, tuple[str, dict[str, str] | None]] = {k: (v, None) for k, v in _TOP.items()}
    out.update({"mid.block_1": ("mid_block.resnets.0", _RES), "mid.attn_1": ("mid_block.attentions.0", _ATTN),
                "mid.block_2": ("mid_block.resnets.1", _RES)})
    for lvl in range(n):
        up = n - 1 - lvl
        for r in range(cfg.num_res_blocks + 1):
            if r < cfg.num_res_blocks:
                out[f"down.{lvl}.block.{r}"] = (f"down_blocks.{lvl}.resnets.{r}", _RES)
                out[f"down.{lvl}.attn.{r}"] = (f"down_blocks.{lvl}.attentions.{r}", _ATTN)
            out[f"up.{lvl}.block.{r}"] = (f"up_blocks.{up}.resnets.{r}", _RES)
            out[f"up.{lvl}.attn.{r}"] = (f"up_blocks.{up}.attentions.{r}", _ATTN)
        out[f"down.{lvl}.downsample.conv"] = (f"down_blocks.{lvl}.downsamplers.0.conv", None)
        out[f"up.{lvl}.upsample.conv"] = (f"up_blocks.{up}.upsamplers.0.conv", None)
    return out


def convert_ddim_state_dict(state: Mapping[str, Tensor], config: DdimConfig | Mapping[str, Any] | None = None,
                            ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Map an original-layout state dict onto ``UNet2DModel``.

    Args:
        state: the ``Model`` state dict (DiffNB ``*.ckpt``, or the DDIM repository's model / EMA state).
        config: the architecture (:class:`DdimConfig`, or a parsed YAML); None reads it from the weights at 32 px.

    Returns:
        (``UNet2DModel`` keyword arguments, converted state dict). Attention 1x1 convolutions (C, C, 1, 1) become
        linear weights (C, C).

    Raises:
        CheckpointError: a key that has no place in the layout, or an architecture UNet2DModel cannot express.
    """
    if config is None:
        cfg = infer_ddim_config(state)
    else:
        cfg = config if isinstance(config, DdimConfig) else DdimConfig.from_mapping(config)
    unet_config = diffusers_config(cfg)
    modules = _module_map(cfg)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        prefix = next((p for p in (module, module.rpartition(".")[0]) if p in modules), None)
        if prefix is None:
            raise CheckpointError(f"unexpected key {key!r}: not part of the DDIM Model layout {cfg}")
        target, subs = modules[prefix]
        part = module[len(prefix) + 1:]
        if subs is None:
            name = target if not part else None
        else:
            name = f"{target}.{subs[part]}" if part in subs else None
        if name is None:
            hint = " (a 3x3 conv_shortcut has no UNet2DModel equivalent)" if part == "conv_shortcut" else ""
            raise CheckpointError(f"unexpected key {key!r} in the DDIM Model layout{hint}")
        out[f"{name}.{leaf}"] = value.flatten(1) if subs is _ATTN and part != "norm" and value.ndim == 4 else value
    return unet_config, out


def pick_ddim_state(obj: object, path: str | os.PathLike[str] = "checkpoint") -> dict[str, Tensor]:
    """The model weights inside what a DDIM-style tool saved.

    Accepted: a flat state dict (DiffNB's released ``*.ckpt`` files, ``model-{step}.ckpt``, ``ema-{step}.ckpt``), a
    dict nesting it under ``state_dict`` / ``model`` / ``ema``, or a list such as DiffNB's ``train.ckpt``
    ``[model, optimizer, scheduler, epoch, step, time]`` or the DDIM repository's ``ckpt.pth`` ``[model, optimizer,
    epoch, step, ema]``: the LAST state dict in the list that holds ``conv_in.weight`` is taken (the EMA weights where
    saved). A ``module.`` prefix on every key (DataParallel / DDP) is removed.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "ema", "model"):
            if isinstance(obj.get(key), Mapping):
                return pick_ddim_state(obj[key], path)
        tensors = _strip_module(obj)
        if tensors:  # the layout is checked by the conversion, with hints for other formats
            return tensors
    candidates = [o for o in obj if isinstance(o, Mapping)] if isinstance(obj, (list, tuple)) else []
    found = [_strip_module(c) for c in candidates if any(k.endswith("conv_in.weight") for k in c)]
    if not found:
        raise CheckpointError(f"{path}: no DDIM Model state dict inside (type {type(obj).__name__}; expected a dict "
                              "of tensors with conv_in.weight, temb.dense.0.weight, down.0.block.0..., or a list "
                              "holding one)")
    return found[-1]


def _strip_module(state: Mapping[str, Any]) -> dict[str, Tensor]:
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        return {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_ddim_unet(source: str | os.PathLike[str] | Mapping[str, Tensor],
                   config: DdimConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None) -> torch.nn.Module:
    """An original-layout checkpoint as an fp32 diffusers ``UNet2DModel`` in eval mode.

    The call is ``unet(x, t, class_labels=y).sample``: x (B, C, H, W) in [-1, 1], t (B,) timesteps 0..999, y (B,)
    int64 labels with ``num_classes`` the null label (class-conditional models only); output (B, out_ch, H, W) eps.
    ``config``: :class:`DdimConfig`, a parsed YAML or the path of one; None reads the architecture from the weights.
    """

    if isinstance(source, (str, os.PathLike)):
        state = pick_ddim_state(read_checkpoint(source), source)
    else:
        state = pick_ddim_state(source)
    if isinstance(config, (str, os.PathLike)):
        config = DdimConfig.from_file(Path(config))
    unet_config, converted = convert_ddim_state_dict(state, config)
    unet = UNet2DModel(**unet_config)
    load_exact(unet, converted, "DDIM / DiffNB checkpoint")
    return unet.float().eval()


def linear_alphas_cumprod(beta_start: float = 1e-4, beta_end: float = 0.02, steps: int = 1000) -> Tensor:
    """(steps,) float64 alpha-bar of the linear schedule beta_t = linspace(beta_start, beta_end, steps)."""
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def load_ddim_cifar(checkpoint: str | os.PathLike[str] | Mapping[str, Tensor],
                    config: DdimConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
                    null_label: int | None = None, **options: Any) -> "PixelBackend":
    """A :class:`~diffguard.backends.pixel_unet.PixelBackend` for DiffNB's CIFAR checkpoint (or any DDIM-layout model).

    Args:
        checkpoint: DiffNB's class-conditional CIFAR-10 ``*.ckpt`` (or a DDIM-repository checkpoint), read with
            ``torch.load(weights_only=True)``; ``.safetensors`` also works.
        config: the architecture (see :func:`load_ddim_unet`); None reads it from the weights.
        null_label: the "no class" label; None takes the class embedding's last row (DiffNB's ``num_classes``).
            Unconditional models have none.
        options: ``autocast``, ``channels_last``, ``compile`` (see ``PixelBackend``).

    The schedule is DiffNB's: linear betas 1e-4 .. 0.02, T = 1000 (alpha-bar in float64).
    """

    unet = load_ddim_unet(checkpoint, config)
    rows = unet.config.num_class_embeds
    if rows is None:
        if null_label is not None:
            raise CheckpointError(f"null_label {null_label} given but this checkpoint is unconditional (no label_emb)")
    elif null_label is None:
        null_label = rows - 1
    elif not 0 <= null_label < rows:
        raise CheckpointError(f"null_label {null_label} is outside the class embedding's {rows} rows (0..{rows - 1})")
    return PixelBackend(unet, linear_alphas_cumprod(), null_label, unet.config.in_channels, **options)
