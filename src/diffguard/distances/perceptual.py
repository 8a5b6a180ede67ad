"""Perceptual distances on VGG16 features: dists (Ding et al. 2020) and lpips (Zhang et al. 2018).

Both are written here from the papers' formulas and read their weights from a local file (nothing is downloaded, no
pickle is executed): see :mod:`diffguard.distances.vgg` for the file format and :func:`write_dists_weights` /
:func:`write_lpips_weights` to make one. Inputs are (B, C, H, W) in [-1, 1] with C = 1 or 3; they are mapped to
[0, 1] and clamped, grayscale is repeated to 3 channels. The network follows the input's device and dtype (it is
moved on the first call with a new one; going through float16 and back loses precision, so keep one dtype).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from diffguard.distances.distance import DISTANCES, Distance, to_unit
from diffguard.distances.vgg import (
    VGG16_STAGE_CHANNELS,
    check_shapes,
    imagenet_normalize,
    load_trunk,
    load_weights_file,
    save_weights_file,
    vgg16_feature_shapes,
    vgg16_features,
)

DISTS_CHANNELS: tuple[int, ...] = (3, *VGG16_STAGE_CHANNELS)
"""Channels of the six DISTS stages (the image itself, then relu1_2 ... relu5_3); they sum to 1475."""

DISTS_HOW_TO = ("Make one with diffguard.distances.write_dists_weights(path, vgg_state, alpha, beta): vgg_state from "
                "torchvision's ImageNet VGG16 checkpoint (vgg16-397923af.pth, read with torch.load(..., "
                "weights_only=True)), alpha and beta (1, 1475, 1, 1) from the DISTS release "
                "(DISTS_pytorch weights.pt).")
LPIPS_HOW_TO = ("Make one with diffguard.distances.write_lpips_weights(path, vgg_state, lins): vgg_state from "
                "torchvision's ImageNet VGG16 checkpoint (vgg16-397923af.pth), lins the five (1, C, 1, 1) weights "
                "lin0..lin4 of the LPIPS v0.1 VGG release (lpips/weights/v0.1/vgg.pth).")


class _PerceptualDistance(Distance):
    """Shared plumbing: [-1, 1] -> clamped [0, 1] RGB, the network moved to the input's device and dtype."""

    channels = (1, 3)
    net: nn.Module
    clamp: bool = True

    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return self.net(self._unit(x), self._unit(x_hat))

    def _unit(self, x: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1] (clamped unless ``clamp`` is False), 3 channels; moves the network to x's device/dtype."""
        p = next(self.net.parameters())
        if p.device != x.device or p.dtype != x.dtype:
            self.net.to(device=x.device, dtype=x.dtype)
        u = to_unit(x) if self.clamp else (x + 1) / 2
        return u.expand(-1, 3, -1, -1) if u.shape[1] == 1 else u


class _DISTSNet(nn.Module):
    """DISTS on [0, 1] RGB pairs: trunk with L2 pooling and the normalised alpha / beta weights."""

    def __init__(self, tensors: Mapping[str, Tensor], c1: float, c2: float):
        super().__init__()
        self.trunk = load_trunk(tensors, "l2")
        total = tensors["alpha"].sum() + tensors["beta"].sum()
        self.register_buffer("alpha", tensors["alpha"] / total)
        self.register_buffer("beta", tensors["beta"] / total)
        self.c1, self.c2 = c1, c2

    def forward(self, u: Tensor, u_hat: Tensor) -> Tensor:
        both = self.stats(torch.cat([u, u_hat]))
        return self.compare([(m.chunk(2)[0], v.chunk(2)[0]) for m, v, _ in both],
                            [(m.chunk(2)[1], v.chunk(2)[1]) for m, v, _ in both],
                            [d.chunk(2) for _, _, d in both])

    def stats(self, u: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per stage: spatial mean (B, C, 1, 1), variance (B, C, 1, 1) and the centred features (B, C, h, w)."""
        out = []
        for f in [u, *self.trunk(imagenet_normalize(u))]:
            m = f.mean((2, 3), keepdim=True)
            d = f - m
            out.append((m, d.square().mean((2, 3), True), d))
        return out

    def compare(self, sx: list[tuple[Tensor, Tensor]], sy: list[tuple[Tensor, Tensor]],
                centred: list[tuple[Tensor, Tensor]]) -> Tensor:
        """DISTS from per-stage (mean, variance) of both sides and the centred features (dx, dy) per stage."""
        alphas = self.alpha.split(DISTS_CHANNELS, dim=1)
        betas = self.beta.split(DISTS_CHANNELS, dim=1)
        dist = sx[0][0].new_zeros(sx[0][0].shape[0])
        for (mx, vx), (my, vy), (dx, dy), a, b in zip(sx, sy, centred, alphas, betas):
            cov = (dx * dy).mean((2, 3), True)
            texture = (2 * mx * my + self.c1) / (mx.square() + my.square() + self.c1)
            structure = (2 * cov + self.c2) / (vx + vy + self.c2)
            dist = dist + (a * (1 - texture) + b * (1 - structure)).sum((1, 2, 3))
        return dist


@DISTANCES.register("dists")
class DISTSDistance(_PerceptualDistance):
    """DISTS, Deep Image Structure and Texture Similarity (Ding et al., TPAMI 2020), the authors' default metric.

    Stages: f_0 = the [0, 1] image itself, f_1 ... f_5 = VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of the
    ImageNet-normalised image, with L2 pooling (:class:`~diffguard.distances.vgg.L2Pool2d`) instead of max pooling.
    Per stage k and channel j, with spatial means mu, variances var and covariance cov of the two feature maps::

        texture   l = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
        structure s = (2 cov_xy + c2) / (var_x + var_y + c2)
        DISTS = 1 - sum_kj (alpha_kj l_kj + beta_kj s_kj),   alpha, beta divided by sum(alpha) + sum(beta)

    computed as sum_kj (alpha_kj (1 - l_kj) + beta_kj (1 - s_kj)), the same number, so that identical images give
    exactly 0. The authors' score is the similarity 1 - DISTS (:meth:`similarity`).

    Args:
        weights: a safetensors or torch (weights_only) file with the VGG16 ``features.{i}.weight`` /
            ``features.{i}.bias`` tensors in torchvision layout and ``alpha``, ``beta`` of shape (1, 1475, 1, 1)
            (channel order: the 3 image channels, then the 64, 128, 256, 512, 512 stage channels), as in the DISTS
            release. Required: see :func:`write_dists_weights`.
        c1, c2: the stabilising constants (1e-6 in the paper).

    Input: x, x_hat (B, C, H, W) in [-1, 1], C = 1 or 3, any H, W >= 1. Output: (B,), 0 for identical images,
    in [0, 1] for the released (non-negative) weights.
    """

    name = "dists"

    def __init__(self, weights: str | os.PathLike | None = None, c1: float = 1e-6, c2: float = 1e-6,
                 clamp: bool = True):
        self.clamp = clamp  # False: (x + 1) / 2 unclamped, as the authors' early-stop metric on noisy latents
        tensors = load_weights_file(weights, "DISTS", DISTS_HOW_TO)
        n = sum(DISTS_CHANNELS)
        expected = {**vgg16_feature_shapes(), "alpha": (1, n, 1, 1), "beta": (1, n, 1, 1)}
        check_shapes(tensors, expected, f"DISTS weights file {str(weights)!r}", DISTS_HOW_TO)
        a, b = tensors["alpha"], tensors["beta"]
        if not (bool(torch.isfinite(a).all() & torch.isfinite(b).all()) and float(a.sum() + b.sum()) > 0):
            raise ValueError(f"DISTS weights file {str(weights)!r}: alpha and beta must be finite with a positive "
                             f"sum. {DISTS_HOW_TO}")
        self.net = _DISTSNet(tensors, c1, c2).eval()

    def similarity(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """1 - DISTS (B,): 1 for identical images, the authors' ``dists`` score (higher = more similar)."""
        return 1 - self(x, x_hat)

    def reference_stats(self, ref: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per-stage statistics of reference images (B, C, H, W) in [-1, 1], to compare many candidates with the
        same references without recomputing their VGG features (see :meth:`to_reference`)."""
        with torch.no_grad():
            return self.net.stats(self._unit(ref))

    def to_reference(self, x: Tensor, ref_stats: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        """DISTS(ref, x) (B,) from :meth:`reference_stats` of the references (row b of the stats belongs to row b
        of x); the same number as ``self(ref, x)`` up to float rounding. x: (B, C, H, W) in [-1, 1]."""
        sx = self.net.stats(self._unit(x))
        return self.net.compare([(m, v) for m, v, _ in ref_stats], [(m, v) for m, v, _ in sx],
                                [(d_ref, d) for (_, _, d_ref), (_, _, d) in zip(ref_stats, sx)])


class _LPIPSNet(nn.Module):
    """LPIPS on [0, 1] RGB pairs: max-pooling trunk and the five 1x1 channel weights."""

    def __init__(self, tensors: Mapping[str, Tensor], lins: Sequence[Tensor], eps: float):
        super().__init__()
        self.trunk = load_trunk(tensors, "max")
        self.lins = nn.ParameterList([nn.Parameter(w.clone(), requires_grad=False) for w in lins])
        self.eps = eps

    def forward(self, u: Tensor, u_hat: Tensor) -> Tensor:
        stages = self.trunk(imagenet_normalize(torch.cat([u, u_hat])))
        dist = u.new_zeros(u.shape[0])
        for f, w in zip(stages, self.lins):
            f = f / (f.square().sum(1, keepdim=True).sqrt() + self.eps)
            fx, fy = f.chunk(2)
            dist = dist + (w * (fx - fy).square()).sum(1).mean((1, 2))
        return dist


def _lpips_key(tensors: Mapping[str, Tensor], k: int) -> str:
    """``lin{k}.model.1.weight`` (the LPIPS release layout) when present, else ``lin{k}.weight``."""
    key = f"lin{k}.model.1.weight"
    return key if key in tensors or f"lin{k}.weight" not in tensors else f"lin{k}.weight"


@DISTANCES.register("lpips")
class LPIPSDistance(_PerceptualDistance):
    """LPIPS with VGG16 (Zhang et al., CVPR 2018, "lin" v0.1 version); the authors' score is -LPIPS.

    Features f_l at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of standard VGG16 (max pooling), each unit-normalised
    over channels, f / (||f||_2 + 1e-10)::

        LPIPS = sum_l mean_hw sum_c w_lc (f_l,x - f_l,y)^2

    Input scaling: the ImageNet normalisation of the [0, 1] image, (u - mean) / std. It is exactly the original's
    shift / scale layer on [-1, 1] images (shift = 2 mean - 1 = (-0.030, -0.088, -0.188), scale = 2 std =
    (0.458, 0.448, 0.450)).

    Args:
        weights: a safetensors or torch (weights_only) file with the VGG16 ``features.{i}.weight`` /
            ``features.{i}.bias`` tensors in torchvision layout and the linear weights ``lin{k}.model.1.weight``
            (the LPIPS release's names; ``lin{k}.weight`` is accepted too) of shape (1, C_k, 1, 1) for k = 0..4,
            C = 64, 128, 256, 512, 512. Required: see :func:`write_lpips_weights`.

    Input: x, x_hat (B, C, H, W) in [-1, 1], C = 1 or 3, H, W >= 16 (four 2x2 max poolings). Output: (B,) >= 0 for
    non-negative weights, 0 for identical images.
    """

    name = "lpips"

    def __init__(self, weights: str | os.PathLike | None = None):
        tensors = load_weights_file(weights, "LPIPS", LPIPS_HOW_TO)
        keys = [_lpips_key(tensors, k) for k in range(len(VGG16_STAGE_CHANNELS))]
        expected = {**vgg16_feature_shapes(), **{key: (1, c, 1, 1) for key, c in zip(keys, VGG16_STAGE_CHANNELS)}}
        check_shapes(tensors, expected, f"LPIPS weights file {str(weights)!r}", LPIPS_HOW_TO)
        self.net = _LPIPSNet(tensors, [tensors[key] for key in keys], eps=1e-10).eval()

    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        if min(x.shape[-2:]) < 16:
            raise ValueError(f"lpips needs images of at least 16x16 pixels (VGG16 pools four times), "
                             f"got {tuple(x.shape[-2:])}; upsample them first or use 'dists'")
        return super().compute(x, x_hat)


def write_dists_weights(path: str | os.PathLike, vgg_state: Mapping[str, Tensor], alpha: Tensor,
                        beta: Tensor) -> Path:
    """Write a DISTS weights file for :class:`DISTSDistance` (safetensors if ``path`` ends in ``.safetensors``).

    Args:
        path: the file to write.
        vgg_state: a VGG16 state dict in torchvision layout (only its ``features.*`` tensors are kept), e.g.
            ``torch.load("vgg16-397923af.pth", weights_only=True)``.
        alpha, beta: 1475 weights each, any shape with 1475 elements (the release's (1, 1475, 1, 1)).

    Returns:
        The path written.
    """
    out = vgg16_features(vgg_state)
    n = sum(DISTS_CHANNELS)
    for key, t in (("alpha", alpha), ("beta", beta)):
        if t.numel() != n:
            raise ValueError(f"DISTS {key} must have {n} elements (channels {DISTS_CHANNELS}), got {tuple(t.shape)}")
        out[key] = t.reshape(1, n, 1, 1)
    return save_weights_file(path, out)


def write_lpips_weights(path: str | os.PathLike, vgg_state: Mapping[str, Tensor],
                        lins: Sequence[Tensor]) -> Path:
    """Write an LPIPS weights file for :class:`LPIPSDistance` (safetensors if ``path`` ends in ``.safetensors``).

    Args:
        path: the file to write.
        vgg_state: a VGG16 state dict in torchvision layout (only its ``features.*`` tensors are kept).
        lins: five channel weights with 64, 128, 256, 512, 512 elements (the release's (1, C, 1, 1)
            ``lin{k}.model.1.weight``); stored under those names.

    Returns:
        The path written.
    """
    out = vgg16_features(vgg_state)
    if len(lins) != len(VGG16_STAGE_CHANNELS):
        raise ValueError(f"LPIPS needs {len(VGG16_STAGE_CHANNELS)} linear weights, got {len(lins)}")
    for k, (w, c) in enumerate(zip(lins, VGG16_STAGE_CHANNELS)):
        if w.numel() != c:
            raise ValueError(f"LPIPS lin{k} must have {c} elements, got {tuple(w.shape)}")
        out[f"lin{k}.model.1.weight"] = w.reshape(1, c, 1, 1)
    return save_weights_file(path, out)
