"""Original guided-diffusion (ADM, Dhariwal & Nichol 2021) checkpoints converted into a diffusers ``UNet2DModel``.

The released ``*.pt`` files (``256x256_diffusion_uncond.pt``, ``256x256_diffusion.pt``, ``64x64_diffusion.pt``,
...) are plain state dicts of ``guided_diffusion.unet.UNetModel``. diffusers' ``UNet2DModel`` covers that
architecture (scale-shift GroupNorm, ResBlock up/down-sampling, attention with a fixed head width, learned-sigma
output), so the conversion is a renaming plus one re-ordering:

============================================== ===============================================================
ADM key                                        UNet2DModel key
============================================== ===============================================================
``input_blocks.0.0``                           ``conv_in``
``time_embed.0`` / ``time_embed.2``            ``time_embedding.linear_1`` / ``linear_2``
``label_emb``                                  ``class_embedding``
``input_blocks.k.0`` (level l, block r)        ``down_blocks.l.resnets.r`` (``.1``: ``attentions.r``)
``input_blocks.k.0`` (after level l)           ``down_blocks.l.downsamplers.0`` (``op`` -> ``conv``)
``middle_block.0/1/2``                         ``mid_block.resnets.0`` / ``attentions.0`` / ``resnets.1``
``output_blocks.k`` (reversed level l, r)      ``up_blocks.l.resnets.r`` / ``attentions.r`` / ``upsamplers.0``
``out.0`` / ``out.2``                          ``conv_norm_out`` / ``conv_out``
ResBlock ``in_layers.0/2``, ``emb_layers.1``,  ``norm1`` / ``conv1``, ``time_emb_proj``, ``norm2`` / ``conv2``,
``out_layers.0/3``, ``skip_connection``        ``conv_shortcut``
attention ``norm``, ``qkv``, ``proj_out``      ``group_norm``, ``to_q`` / ``to_k`` / ``to_v``, ``to_out.0``
============================================== ===============================================================

The fused ``qkv`` 1x1 convolution (3C, C, 1) is split per head: in the legacy order (``use_new_attention_order
False``, all released checkpoints) the rows are laid out (heads, [q, k, v], head_dim); in the new order ([q, k, v],
heads, head_dim). The head width cannot be read from the weights: pass ``num_head_channels`` (64 in every released
ADM checkpoint) or ``num_heads``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import torch
from diffusers import UNet2DModel
from torch import Tensor

from diffguard.backends.loaders import CheckpointError, load_exact, read_state_dict
from diffguard.backends.pixel_unet import PixelBackend


@dataclass(frozen=True)
class AdmConfig:
    """The architecture of a ``guided_diffusion.unet.UNetModel`` (only what the weights need).

    Args:
        in_channels, model_channels, out_channels: as in ADM (out 2C for learned-sigma models).
        num_res_blocks: ResBlocks per level on the way down (one more per level on the way up).
        channel_mult: width multiplier per level.
        attention_levels: indices of the levels with self-attention (ADM's ``attention_resolutions`` are
            downsample factors ds = 2**level).
        num_head_channels: attention head width (-1: use ``num_heads``).
        num_heads: number of heads when ``num_head_channels`` is -1.
        use_scale_shift_norm, resblock_updown: ADM options.
        num_classes: size of the class embedding, None for an unconditional model.
        new_attention_order: ADM's ``use_new_attention_order`` (False in released checkpoints).
        image_size: resolution the model was trained at (informational; None if unknown).
    """

    in_channels: int
    model_channels: int
    out_channels: int
    num_res_blocks: int
    channel_mult: tuple[int, ...]
    attention_levels: tuple[int, ...]
    num_head_channels: int = 64
    num_heads: int = 1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    num_classes: int | None = None
    new_attention_order: bool = False
    image_size: int | None = None

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> "AdmConfig":
        """From the keyword arguments of ``guided_diffusion.unet.UNetModel`` (lists accepted for tuples)."""
        ds = {int(d) for d in kwargs["attention_resolutions"]}
        mult = tuple(int(m) for m in kwargs["channel_mult"])
        if not kwargs.get("conv_resample", True) or kwargs.get("dims", 2) != 2:
            raise CheckpointError("only 2-D ADM UNets with conv_resample=True are supported")
        return cls(
            in_channels=int(kwargs["in_channels"]), model_channels=int(kwargs["model_channels"]),
            out_channels=int(kwargs["out_channels"]), num_res_blocks=int(kwargs["num_res_blocks"]),
            channel_mult=mult, attention_levels=tuple(i for i in range(len(mult)) if 2**i in ds),
            num_head_channels=int(kwargs.get("num_head_channels", -1)), num_heads=int(kwargs.get("num_heads", 1)),
            use_scale_shift_norm=bool(kwargs.get("use_scale_shift_norm", False)),
            resblock_updown=bool(kwargs.get("resblock_updown", False)), num_classes=kwargs.get("num_classes"),
            new_attention_order=bool(kwargs.get("use_new_attention_order", False)),
            image_size=kwargs.get("image_size"))

    def heads(self, channels: int) -> int:
        """Number of attention heads at a width of ``channels``."""
        return channels // self.num_head_channels if self.num_head_channels > 0 else self.num_heads

    def width(self, level: int) -> int:
        return self.model_channels * self.channel_mult[level]


def infer_adm_config(state: Mapping[str, Tensor], num_head_channels: int = 64, num_heads: int = 1,
                     new_attention_order: bool = False, image_size: int | None = None) -> AdmConfig:
    """Read the architecture of an ADM UNet from its state dict (the head layout must be given)."""
    if "input_blocks.0.0.weight" not in state or "out.2.weight" not in state:
        raise CheckpointError("not a guided-diffusion UNetModel state dict: input_blocks.0.0.weight / out.2.weight "
                              f"missing (first keys: {list(state)[:4]})")
    conv_in = state["input_blocks.0.0.weight"]
    mc = conv_in.shape[0]
    n_in = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("input_blocks."))
    n_out = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("output_blocks."))
    ups = sorted(int(k.split(".")[1]) for k in state if k.startswith("output_blocks.")
                 and (".conv." in k or k.split(".")[2] in ("1", "2") and ".in_layers." in k))
    nrb = ups[0] if ups else n_out - 1
    levels = n_out // (nrb + 1)
    if levels * (nrb + 1) != n_out or n_in != n_out:
        raise CheckpointError(f"unexpected ADM block layout ({n_in} input / {n_out} output blocks)")
    first = [1 + lvl * (nrb + 1) for lvl in range(levels)]
    mult = tuple(state[f"input_blocks.{k}.0.out_layers.3.weight"].shape[0] // mc for k in first)
    emb = state["input_blocks.1.0.emb_layers.1.weight"].shape[0]
    return AdmConfig(
        in_channels=conv_in.shape[1], model_channels=mc, out_channels=state["out.2.weight"].shape[0],
        num_res_blocks=nrb, channel_mult=mult,
        attention_levels=tuple(i for i, k in enumerate(first) if f"input_blocks.{k}.1.qkv.weight" in state),
        num_head_channels=num_head_channels, num_heads=num_heads,
        use_scale_shift_norm=emb == 2 * state["input_blocks.1.0.out_layers.3.weight"].shape[0],
        resblock_updown=levels > 1 and f"input_blocks.{nrb + 1}.0.in_layers.0.weight" in state,
        num_classes=state["label_emb.weight"].shape[0] if "label_emb.weight" in state else None,
        new_attention_order=new_attention_order, image_size=image_size)


def diffusers_config(cfg: AdmConfig) -> dict[str, Any]:
    """``UNet2DModel`` keyword arguments for the architecture (raises if diffusers cannot express it)."""
    if cfg.channel_mult[0] != 1:
        raise CheckpointError("ADM UNets with channel_mult[0] != 1 have no UNet2DModel equivalent")
    widths = [cfg.width(i) for i in range(len(cfg.channel_mult))]
    head_dims = {w // cfg.heads(w) for i, w in enumerate(widths) if i in cfg.attention_levels} | {
        widths[-1] // cfg.heads(widths[-1])}
    if len(head_dims) != 1:
        raise CheckpointError(f"attention head widths differ between levels ({sorted(head_dims)}); UNet2DModel "
                              "needs one head width: use num_head_channels")
    down, up = ("resnet", "resnet") if cfg.resblock_updown else ("conv", "conv")
    plain_down = "ResnetDownsampleBlock2D" if cfg.resblock_updown else "DownBlock2D"
    plain_up = "ResnetUpsampleBlock2D" if cfg.resblock_updown else "UpBlock2D"
    levels = range(len(widths))
    return dict(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        block_out_channels=tuple(widths), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if i in cfg.attention_levels else plain_down for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in cfg.attention_levels else plain_up for i in reversed(levels)),
        attention_head_dim=head_dims.pop(), attn_norm_num_groups=32, norm_num_groups=32, norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if cfg.use_scale_shift_norm else "default",
        downsample_type=down, upsample_type=up, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
        act_fn="silu", num_class_embeds=cfg.num_classes, add_attention=True, dropout=0.0,
    )


_RES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
        "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_TOP = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
        "time_embed.2": "time_embedding.linear_2", "label_emb": "class_embedding", "out.0": "conv_norm_out",
        "out.2": "conv_out"}


def block_map(cfg: AdmConfig) -> dict[str, tuple[str, str]]:
    """ADM module prefix -> (diffusers prefix, kind) with kind in res / attn / conv (a plain resampling conv)."""
    nrb, levels, out = cfg.num_res_blocks, len(cfg.channel_mult), {}
    k = 1
    for lvl in range(levels):
        for r in range(nrb):
            out[f"input_blocks.{k}.0"] = (f"down_blocks.{lvl}.resnets.{r}", "res")
            out[f"input_blocks.{k}.1"] = (f"down_blocks.{lvl}.attentions.{r}", "attn")
            k += 1
        if lvl < levels - 1:
            sub = ("res", "") if cfg.resblock_updown else ("conv", ".op")
            out[f"input_blocks.{k}.0{sub[1]}"] = (f"down_blocks.{lvl}.downsamplers.0{'.conv' * (sub[0] == 'conv')}",
                                                  sub[0])
            k += 1
    out.update({"middle_block.0": ("mid_block.resnets.0", "res"), "middle_block.1": ("mid_block.attentions.0", "attn"),
                "middle_block.2": ("mid_block.resnets.1", "res")})
    for lvl in range(levels):
        has_attn = (levels - 1 - lvl) in cfg.attention_levels
        for r in range(nrb + 1):
            k = lvl * (nrb + 1) + r
            out[f"output_blocks.{k}.0"] = (f"up_blocks.{lvl}.resnets.{r}", "res")
            out[f"output_blocks.{k}.1"] = (f"up_blocks.{lvl}.attentions.{r}", "attn")
            if r == nrb and lvl < levels - 1:
                pos = 2 if has_attn else 1
                kind = "res" if cfg.resblock_updown else "conv"
                out[f"output_blocks.{k}.{pos}"] = (f"up_blocks.{lvl}.upsamplers.0{'.conv' * (kind == 'conv')}", kind)
    return out


def rename_unet_keys(state: Mapping[str, Tensor], top: Mapping[str, str],
                     blocks: Mapping[str, tuple[str, str]], other: Callable[[str, str, str, Tensor], dict[str, Tensor]],
                     what: str) -> dict[str, Tensor]:
    """Rename an openaimodel-style UNet state dict (``input_blocks`` / ``middle_block`` / ``output_blocks``).

    ``top``: module renames outside the blocks; ``blocks``: block prefix -> (diffusers target, kind) with kind
    "res" (ResBlock), "conv" (plain up/down-sampling conv) or anything else, handled by ``other(target, rest, leaf,
    value)`` (attention layers). Unknown keys raise :class:`CheckpointError` naming ``what``.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in top:
            out[f"{top[module]}.{leaf}"] = value
            continue
        prefix = next((p for p in blocks if module == p or module.startswith(p + ".")), None)
        if prefix is None:
            raise CheckpointError(f"unexpected key {key!r} for the {what}")
        target, kind = blocks[prefix]
        rest = module[len(prefix) + 1:]
        if kind == "res":
            if rest not in _RES:
                raise CheckpointError(f"unexpected ResBlock key {key!r}")
            out[f"{target}.{_RES[rest]}.{leaf}"] = value
        elif kind == "conv":
            out[f"{target}.{leaf}"] = value
        else:
            out.update(other(target, rest, leaf, value))
    return out


def convert_adm_state_dict(state: Mapping[str, Tensor], cfg: AdmConfig) -> dict[str, Tensor]:
    """Rename (and split the attention ``qkv`` of) an ADM state dict into ``UNet2DModel`` keys."""
    return rename_unet_keys(state, _TOP, block_map(cfg),
                            lambda target, rest, leaf, value: _attention(target, rest, leaf, value, cfg),
                            f"ADM layout {cfg}")


def _attention(target: str, part: str, leaf: str, value: Tensor, cfg: AdmConfig) -> dict[str, Tensor]:
    if part == "norm":
        return {f"{target}.group_norm.{leaf}": value}
    if part == "proj_out":
        return {f"{target}.to_out.0.{leaf}": value.flatten(1) if value.ndim > 1 else value}
    if part != "qkv":
        raise CheckpointError(f"unexpected attention key {target}.{part}.{leaf}")
    channels = value.shape[0] // 3
    heads = cfg.heads(channels)
    rest = value.shape[1:2] if value.ndim > 1 else ()
    layout = (3, heads, channels // heads) if cfg.new_attention_order else (heads, 3, channels // heads)
    split = value.reshape(*layout, *rest)
    split = split if cfg.new_attention_order else split.transpose(0, 1)  # -> (3, heads, head_dim, ...)
    q, k, v = (s.reshape(channels, *rest) for s in split)
    return {f"{target}.to_q.{leaf}": q, f"{target}.to_k.{leaf}": k, f"{target}.to_v.{leaf}": v}


def load_adm_unet(source: str | os.PathLike[str] | Mapping[str, Tensor], config: AdmConfig | Mapping | None = None,
                  num_head_channels: int = 64, num_heads: int = 1, image_size: int | None = None) -> torch.nn.Module:
    """An ADM checkpoint as an fp32 diffusers ``UNet2DModel`` in eval mode.

    Args:
        source: path of the ``.pt`` / ``.safetensors`` file (read with ``weights_only``) or a state dict.
        config: the architecture (:class:`AdmConfig` or ADM ``UNetModel`` kwargs); None infers it from the
            weights, with the head layout from ``num_head_channels`` / ``num_heads``.
        image_size: training resolution, stored as the model's ``sample_size``.

    The call is ``unet(x, t, class_labels=y).sample``: x (B, C, H, W), t (B,) the original timesteps (0..T-1),
    output (B, out_channels, H, W) with eps in the first C channels (learned-sigma models add the variance
    interpolation values v in the other C).
    """

    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    if config is None:
        cfg = infer_adm_config(state, num_head_channels, num_heads, image_size=image_size)
    else:
        cfg = config if isinstance(config, AdmConfig) else AdmConfig.from_kwargs(config)
    unet = UNet2DModel(**diffusers_config(cfg))
    load_exact(unet, convert_adm_state_dict(state, cfg), "guided-diffusion checkpoint")
    return unet.float().eval()


ScheduleName = Literal["linear", "cosine"]


def adm_alphas_cumprod(schedule: ScheduleName = "linear", steps: int = 1000) -> Tensor:
    """ADM's training schedules as (T,) float64 alpha-bar.

    "linear": beta_t from 1e-4 * 1000 / T to 0.02 * 1000 / T evenly spaced (T = ``steps``). "cosine" (Nichol &
    Dhariwal 2021): alpha-bar(s) = cos(((s / T) + 0.008) / 1.008 * pi / 2)^2, beta_t = 1 - abar((t + 1) / T) /
    abar(t / T) capped at 0.999.
    """
    if schedule == "linear":
        scale = 1000 / steps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    elif schedule == "cosine":
        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - abar((i + 1) / steps) / abar(i / steps), 0.999) for i in range(steps)],
                             dtype=torch.float64)
    else:
        raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
    return torch.cumprod(1 - betas, dim=0)


def adm_backend(source: str | os.PathLike[str] | Mapping[str, Tensor], config: AdmConfig | Mapping | None = None,
                schedule: ScheduleName = "linear", steps: int = 1000, resolution: int | None = 256,
                num_head_channels: int = 64) -> "PixelBackend":
    """A :class:`~diffguard.backends.pixel_unet.PixelBackend` for an unconditional ADM checkpoint.

    ``resolution``: the model's image size; inputs of another size are resized to it (bilinear, no antialias,
    as the authors' pinned torchvision) and syntheses are resized back by the detector. Class-conditional ADM
    models have no null class, so DiffGuard's unconditional inversion cannot use them; load them with
    :func:`load_adm_unet` instead.
    """

    unet = load_adm_unet(source, config, num_head_channels=num_head_channels, image_size=resolution)
    if unet.config.num_class_embeds is not None:
        raise CheckpointError("this ADM checkpoint is class-conditional and has no null class; DiffGuard inverts "
                              "with an unconditional model (e.g. 256x256_diffusion_uncond.pt)")
    return PixelBackend(unet, adm_alphas_cumprod(schedule, steps), None, unet.config.in_channels,
                        resolution=resolution)
