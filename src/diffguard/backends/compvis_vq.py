"""CompVis / taming-transformers VQ first stages (``VQModelInterface``) converted into a diffusers ``VQModel``.

Keys (prefix ``first_stage_model.`` already removed):

====================================================== =====================================================
taming key                                             VQModel key
====================================================== =====================================================
``encoder.down.i.block.j`` / ``.attn.j``               ``encoder.down_blocks.i.resnets.j`` / ``.attentions.j``
``encoder.down.i.downsample.conv``                     ``encoder.down_blocks.i.downsamplers.0.conv``
``X.mid.block_1`` / ``attn_1`` / ``block_2``           ``X.mid_block.resnets.0`` / ``attentions.0`` / ``resnets.1``
``decoder.up.i.block.j`` / ``.attn.j`` (n levels)      ``decoder.up_blocks.(n-1-i).resnets.j`` / ``.attentions.j``
``decoder.up.i.upsample.conv``                         ``decoder.up_blocks.(n-1-i).upsamplers.0.conv``
``norm_out``, ``conv_in``, ``conv_out``                ``conv_norm_out``, ``conv_in``, ``conv_out``
``quantize.embedding``, ``quant_conv``, ...            ``quantize.embedding``, ``quant_conv``, ...
ResBlock ``nin_shortcut``                              ``conv_shortcut``
attention ``norm``, ``q``, ``k``, ``v``, ``proj_out``  ``group_norm``, ``to_q``, ``to_k``, ``to_v``, ``to_out.0``
====================================================== =====================================================

(X is ``encoder`` or ``decoder``.) Quantisation follows the original code exactly rather than diffusers'
(``cdist``): the nearest code by ``|z|^2 + |e|^2 - 2 z.e`` and the straight-through value ``z + (e - z)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from diffusers import VQModel
from torch import Tensor

from diffguard.backends.loaders import CheckpointError, load_exact


def _levels(state: Mapping[str, Tensor], part: str, group: str) -> int:
    idx = {int(k.split(".")[2]) for k in state if k.startswith(f"{part}.{group}.")}
    if not idx:
        raise CheckpointError(f"not a taming/CompVis first stage: no {part}.{group}.* keys")
    return max(idx) + 1


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def vq_config(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """``VQModel`` keyword arguments read from a taming VQ state dict (``first_stage_model.`` removed)."""
    if "quantize.embedding.weight" not in state:
        raise CheckpointError("the first stage has no quantize.embedding.weight: only VQ first stages "
                              "(VQModelInterface, e.g. cin256-v2's VQ-f4) are supported")
    n = _levels(state, "encoder", "down")
    widths = [state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(n)]
    attn = [_count(state, f"encoder.down.{i}.attn.") > 0 for i in range(n)]
    codes, embed_dim = state["quantize.embedding.weight"].shape
    return dict(
        in_channels=state["encoder.conv_in.weight"].shape[1], out_channels=state["decoder.conv_out.weight"].shape[0],
        down_block_types=tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn),
        up_block_types=tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(widths), layers_per_block=_count(state, "encoder.down.0.block."),
        act_fn="silu", latent_channels=state["encoder.conv_out.weight"].shape[0], num_vq_embeddings=codes,
        vq_embed_dim=embed_dim, norm_num_groups=32, scaling_factor=1.0,
        mid_block_add_attention="encoder.mid.attn_1.q.weight" in state,
    )


_RES = {"nin_shortcut": "conv_shortcut", "norm1": "norm1", "norm2": "norm2", "conv1": "conv1", "conv2": "conv2"}
_ATT = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _sub(kind: str, name: str, leaf: str, value: Tensor) -> tuple[str, Tensor]:
    table = _RES if kind == "res" else _ATT
    if name not in table:
        raise CheckpointError(f"unexpected first-stage key part {name!r}")
    if kind == "attn" and value.ndim == 4:
        value = value.flatten(1)  # 1x1 conv -> linear
    return f"{table[name]}.{leaf}", value


def convert_vq_state_dict(state: Mapping[str, Tensor], levels: int) -> dict[str, Tensor]:
    """Rename a taming VQ state dict into ``VQModel`` keys (see the module table)."""
    out: dict[str, Tensor] = {}
    mid = {"block_1": ("resnets.0", "res"), "attn_1": ("attentions.0", "attn"), "block_2": ("resnets.1", "res")}
    top = {"norm_out": "conv_norm_out", "conv_in": "conv_in", "conv_out": "conv_out"}
    for key, value in state.items():
        p = key.split(".")
        if p[0] in ("quantize", "quant_conv", "post_quant_conv"):
            if p[0] != "quantize" or p[1] == "embedding":
                out[key] = value
            continue
        if p[0] not in ("encoder", "decoder"):
            continue  # e.g. loss.* of a training checkpoint
        if p[1] in top:
            out[f"{p[0]}.{top[p[1]]}.{p[2]}"] = value
        elif p[1] == "mid":
            name, kind = mid[p[2]]
            sub, value = _sub(kind, p[3], p[4], value)
            out[f"{p[0]}.mid_block.{name}.{sub}"] = value
        elif p[1] in ("down", "up"):
            lvl = int(p[2]) if p[1] == "down" else levels - 1 - int(p[2])
            group = f"{p[0]}.{'down_blocks' if p[1] == 'down' else 'up_blocks'}.{lvl}"
            if p[3] in ("downsample", "upsample"):
                out[f"{group}.{p[3]}rs.0.conv.{p[-1]}"] = value
            else:
                kind = "res" if p[3] == "block" else "attn"
                sub, value = _sub(kind, p[5], p[6], value)
                out[f"{group}.{'resnets' if kind == 'res' else 'attentions'}.{p[4]}.{sub}"] = value
        else:
            raise CheckpointError(f"unexpected first-stage key {key!r}")
    return out


def load_compvis_vq(state: Mapping[str, Tensor]) -> torch.nn.Module:
    """A taming / CompVis VQ first stage (keys without ``first_stage_model.``) as an fp32 ``VQModel``."""

    cfg = vq_config(state)
    model = VQModel(**cfg)
    load_exact(model, convert_vq_state_dict(state, len(cfg["block_out_channels"])), "CompVis VQ first stage")
    return model.float().eval()


class CompVisVQ:
    """A ``VQModel`` as the latent backend's autoencoder, with the original code's encode and decode.

    ``encode``: images (B, C, H, W) in [-1, 1] -> the continuous pre-quantisation latents quant_conv(encoder(x)),
    (B, embed_dim, H/f, W/f). ``decode``: latents -> nearest codebook entries (straight-through) ->
    post_quant_conv -> decoder, images unclamped (the backend clamps).
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def encode(self, x: Tensor) -> Tensor:
        return self.model.encode(x).latents

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(z_q (B, c, h, w), indices (B, h, w)): nearest code by |z|^2 + |e|^2 - 2 z.e, z_q = z + (e - z)."""
        codebook = self.model.quantize.embedding.weight.to(z.dtype)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        dist = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
        idx = dist.argmin(1)
        e = codebook[idx].reshape(z.shape[0], z.shape[2], z.shape[3], z.shape[1]).permute(0, 3, 1, 2)
        return z + (e - z).detach(), idx.reshape(z.shape[0], z.shape[2], z.shape[3])

    def decode(self, z: Tensor) -> Tensor:
        z_q, _ = self.quantize(z)
        return self.model.decode(z_q, force_not_quantize=True).sample
