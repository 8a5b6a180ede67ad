"""Original CompVis latent-diffusion class-conditional checkpoints (e.g. cin256-v2) as a :class:`LatentBackend`.

A ``LatentDiffusion`` checkpoint holds three networks and the schedule:

* ``model.diffusion_model.*``: the ``openaimodel.UNetModel`` with ``SpatialTransformer`` blocks, converted into a
  diffusers ``UNet2DConditionModel`` (same block layout as ADM, see :mod:`diffguard.backends.adm`; the
  SpatialTransformer's ``norm`` / ``proj_in`` / ``transformer_blocks`` / ``proj_out`` keep their names);
* ``first_stage_model.*``: the VQ first stage (:mod:`diffguard.backends.compvis_vq`);
* ``cond_stage_model.embedding.weight``: the ``ClassEmbedder`` table (n_classes + 1 rows, the last one the null
  class: 1000 for cin256-v2). The UNet's cross-attention context is ``embedding[y][:, None]`` (B, 1, D);
* ``alphas_cumprod`` (float32 buffer), used as is; without it the LDM "linear" schedule is rebuilt from
  ``linear_start`` / ``linear_end``.

The attention head count cannot be read from the weights: ``num_heads`` (cin256-v2: 1) or ``num_head_channels``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from diffusers import UNet2DConditionModel
from torch import Tensor

from diffguard.backends.adm import AdmConfig, block_map, rename_unet_keys
from diffguard.backends.compvis_vq import CompVisVQ, load_compvis_vq
from diffguard.backends.latent import LatentBackend
from diffguard.backends.loaders import CheckpointError, load_exact, read_state_dict, strip_prefix

UNET = "model.diffusion_model."


def _layout(state: Mapping[str, Tensor]) -> AdmConfig:
    """The block layout (levels, res blocks, attention levels) of an openaimodel UNet state dict."""
    mc = state["input_blocks.0.0.weight"].shape[0]
    n_out = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("output_blocks."))
    ups = sorted(int(k.split(".")[1]) for k in state if k.startswith("output_blocks.") and ".conv." in k)
    nrb = ups[0] if ups else n_out - 1
    levels = n_out // (nrb + 1)
    first = [1 + lvl * (nrb + 1) for lvl in range(levels)]
    return AdmConfig(
        in_channels=state["input_blocks.0.0.weight"].shape[1], model_channels=mc,
        out_channels=state["out.2.weight"].shape[0], num_res_blocks=nrb,
        channel_mult=tuple(state[f"input_blocks.{k}.0.out_layers.3.weight"].shape[0] // mc for k in first),
        attention_levels=tuple(i for i, k in enumerate(first) if f"input_blocks.{k}.1.proj_in.weight" in state),
        use_scale_shift_norm=state["input_blocks.1.0.emb_layers.1.weight"].shape[0] == 2 * mc * 1,
        resblock_updown=False)


def unet_config(state: Mapping[str, Tensor], num_heads: int = 1, num_head_channels: int = -1,
                image_size: int | None = None) -> tuple[dict[str, Any], AdmConfig]:
    """(``UNet2DConditionModel`` keyword arguments, block layout) for an openaimodel UNet with spatial transformers."""
    lay = _layout(state)
    if lay.channel_mult[0] != 1:
        raise CheckpointError("openaimodel UNets with channel_mult[0] != 1 have no UNet2DConditionModel equivalent")
    if "input_blocks.1.0.in_layers.0.weight" not in state or not lay.attention_levels:
        raise CheckpointError("not a spatial-transformer UNet (class-conditional LDMs such as cin256-v2 have one)")
    lvl = lay.attention_levels[0]
    k = 1 + lvl * (lay.num_res_blocks + 1)
    ctx = state[f"input_blocks.{k}.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    depth = _count_blocks(state, f"input_blocks.{k}.1.transformer_blocks.")
    widths = [lay.width(i) for i in range(len(lay.channel_mult))]
    heads = tuple(w // num_head_channels if num_head_channels > 0 else num_heads for w in widths)
    levels = range(len(widths))
    return dict(
        sample_size=image_size, in_channels=lay.in_channels, out_channels=lay.out_channels,
        block_out_channels=tuple(widths), layers_per_block=lay.num_res_blocks,
        down_block_types=tuple("CrossAttnDownBlock2D" if i in lay.attention_levels else "DownBlock2D" for i in levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if i in lay.attention_levels else "UpBlock2D"
                             for i in reversed(levels)),
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=ctx, attention_head_dim=heads,
        transformer_layers_per_block=depth, use_linear_projection=state[
            f"input_blocks.{k}.1.proj_in.weight"].ndim == 2,
        resnet_time_scale_shift="scale_shift" if lay.use_scale_shift_norm else "default",
        norm_num_groups=32, norm_eps=1e-5, act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
    ), lay


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def convert_unet_state_dict(state: Mapping[str, Tensor], lay: AdmConfig) -> dict[str, Tensor]:
    """Rename an openaimodel UNet state dict (``model.diffusion_model.`` removed) into UNet2DConditionModel keys."""
    top = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
           "time_embed.2": "time_embedding.linear_2", "out.0": "conv_norm_out", "out.2": "conv_out"}
    return rename_unet_keys(state, top, block_map(lay), lambda target, rest, leaf, value:
                            {f"{target}.{rest}.{leaf}": value},  # SpatialTransformer: the names match
                            "CompVis UNet layout")


def ldm_alphas_cumprod(linear_start: float = 0.0015, linear_end: float = 0.0195, steps: int = 1000) -> Tensor:
    """The LDM "linear" schedule: beta = linspace(sqrt(start), sqrt(end), T)^2 (float64), as (T,) float64 alpha-bar
    rounded through float32 like the original buffers."""
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float().double()


class ClassContextEps:
    """The converted UNet as an :data:`~diffguard.backends.latent.EpsModel`: context = embedding[y][:, None]."""

    def __init__(self, unet: torch.nn.Module, embedding: Tensor):
        self.unet, self.embedding = unet, embedding

    def __call__(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            raise ValueError("the class-conditional LDM needs labels (the backend passes the null class)")
        ctx = self.embedding.to(device=z.device, dtype=z.dtype)[y.long()][:, None]
        return self.unet(z, t, encoder_hidden_states=ctx).sample


def _read_config(config: Mapping | str | os.PathLike | None) -> Mapping[str, Any]:
    if config is None or isinstance(config, Mapping):
        return config or {}
    if not Path(config).is_file():
        raise CheckpointError(f"LDM config file {config} not found (give e.g. cin256-v2.yaml, or no config: the "
                              "architecture is then read from the weights)")
    text = Path(config).read_text()
    if str(config).endswith(".json"):
        return json.loads(text)
    return yaml.safe_load(text)


def load_compvis_ldm(source: str | os.PathLike[str] | Mapping[str, Tensor],
                     config: Mapping | str | os.PathLike | None = None, num_heads: int = 1,
                     num_head_channels: int = -1, null_label: int | None = None) -> LatentBackend:
    """A class-conditional CompVis ``LatentDiffusion`` checkpoint (VQ first stage) as a :class:`LatentBackend`.

    Args:
        source: ``model.ckpt`` (read with ``weights_only``; see :func:`read_state_dict` for pickled files), a
            ``.safetensors`` file or a state dict.
        config: optional LDM config (dict, ``.json`` or ``.yaml``: the ``model: params:`` of e.g.
            ``cin256-v2.yaml``); its ``unet_config.params.num_heads`` / ``num_head_channels`` / ``image_size``,
            ``scale_factor`` and ``linear_start`` / ``linear_end`` are used when given.
        num_heads, num_head_channels: attention heads when no config says (cin256-v2: 1 head).
        null_label: the null class (default: the last row of the class embedding, 1000 for cin256-v2).
    """

    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    cfg = _read_config(config)
    params = cfg.get("model", cfg).get("params", cfg.get("model", cfg))
    uparams = params.get("unet_config", {}).get("params", {})
    unet_state = strip_prefix(state, UNET)
    if not unet_state or "cond_stage_model.embedding.weight" not in state:
        raise CheckpointError("not a class-conditional LatentDiffusion checkpoint: model.diffusion_model.* or "
                              "cond_stage_model.embedding.weight missing")
    kwargs, lay = unet_config(unet_state, uparams.get("num_heads", num_heads),
                              uparams.get("num_head_channels", num_head_channels), uparams.get("image_size"))
    unet = UNet2DConditionModel(**kwargs)
    load_exact(unet, convert_unet_state_dict(unet_state, lay), "CompVis LDM UNet")
    vq = load_compvis_vq(strip_prefix(state, "first_stage_model."))
    table = state["cond_stage_model.embedding.weight"].float()
    null = table.shape[0] - 1 if null_label is None else null_label
    if "alphas_cumprod" in state:
        acp = state["alphas_cumprod"].double()
    else:
        acp = ldm_alphas_cumprod(params.get("linear_start", 0.0015), params.get("linear_end", 0.0195),
                                 params.get("timesteps", 1000))
    return LatentBackend(CompVisVQ(vq), ClassContextEps(unet.float().eval(), table), acp, null,
                         scale_factor=float(params.get("scale_factor", 1.0)))
