"""The VGG16 convolutional trunk shared by DISTS and LPIPS, and reading / writing their local weight files.

Nothing is downloaded: the weights come from a file the user names. A weights file is a flat mapping name -> tensor,
stored as safetensors (suffix ``.safetensors``) or as a torch file readable with ``torch.load(..., weights_only=True)``
(any other suffix). The VGG16 part uses torchvision's key layout, ``features.{i}.weight`` (out, in, 3, 3) and
``features.{i}.bias`` (out,) for the 13 convolutions i in :data:`VGG16_CONVS`, so the ImageNet checkpoint of
``torchvision.models.vgg16`` (``vgg16-397923af.pth``) can be used as it is (its other keys are ignored).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn

VGG16_CONVS: tuple[tuple[int, int, int], ...] = (
    (0, 3, 64), (2, 64, 64),
    (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512),
    (24, 512, 512), (26, 512, 512), (28, 512, 512),
)
"""(torchvision index in ``vgg16().features``, in channels, out channels) of each 3x3 convolution."""

VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
"""The convolutions of the five blocks; their last ReLUs are relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

VGG16_STAGE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_feature_shapes() -> dict[str, tuple[int, ...]]:
    """Expected ``features.*`` key -> shape of the 13 VGG16 convolutions (torchvision layout)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, c_in, c_out in VGG16_CONVS:
        shapes[f"features.{i}.weight"] = (c_out, c_in, 3, 3)
        shapes[f"features.{i}.bias"] = (c_out,)
    return shapes


class L2Pool2d(nn.Module):
    """L2 pooling (Henaff & Simoncelli 2016), DISTS's replacement for max pooling: sqrt(g * x^2 + 1e-12).

    g is the 3x3 Hann window (outer product of [1/2, 1, 1/2], normalised to sum 1), applied per channel with stride 2
    and padding 1, so an H x W map becomes ceil(H / 2) x ceil(W / 2).
    """

    def __init__(self) -> None:
        super().__init__()
        w = torch.tensor([0.5, 1.0, 0.5])
        self.register_buffer("window", (torch.outer(w, w) / 4).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        g = self.window.expand(x.shape[1], 1, 3, 3)
        return (F.conv2d(x.square(), g, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


class VGG16Trunk(nn.Module):
    """The 13 convolutions of VGG16 with ReLUs, returning the five stage outputs relu1_2 ... relu5_3.

    Args:
        pool: "max" (2x2 max pooling, as VGG16 and LPIPS) or "l2" (:class:`L2Pool2d`, as DISTS), applied before
            blocks 2 to 5.

    Input: (B, 3, H, W) ImageNet-normalised images. Output: five maps (B, C_k, H_k, W_k), C_k in
    :data:`VGG16_STAGE_CHANNELS`. The parameters are frozen (requires_grad False); gradients still reach the input.
    """

    def __init__(self, pool: Literal["max", "l2"]):
        super().__init__()
        if pool not in ("max", "l2"):
            raise ValueError(f"pool must be 'max' or 'l2', got {pool!r}")
        self.features = nn.ModuleDict({str(i): nn.Conv2d(c_in, c_out, 3, padding=1) for i, c_in, c_out in VGG16_CONVS})
        self.pool: nn.Module = nn.MaxPool2d(2) if pool == "max" else L2Pool2d()
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        stages = []
        for k, block in enumerate(VGG16_BLOCKS):
            if k > 0:
                x = self.pool(x)
            for i in block:
                x = F.relu(self.features[str(i)](x))
            stages.append(x)
        return stages


def imagenet_normalize(u: Tensor) -> Tensor:
    """[0, 1] RGB images (B, 3, H, W) -> (u - mean) / std with the ImageNet statistics."""
    mean = u.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = u.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (u - mean) / std


def load_weights_file(path: str | os.PathLike | None, metric: str, how_to: str) -> dict[str, Tensor]:
    """Read a flat name -> tensor file (safetensors or torch ``weights_only``), as float32 tensors on the CPU.

    Args:
        path: the file; None raises a ``ValueError`` explaining what to pass.
        metric: the metric's name, for the messages.
        how_to: one sentence on how to make such a file, appended to the messages.

    Raises:
        ValueError: no path, an unreadable file, or content that is not a flat mapping of tensors.
        FileNotFoundError: the file does not exist.
    """
    if path is None:
        raise ValueError(f"{metric} needs a local weights file (nothing is downloaded): pass weights=PATH. {how_to}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{metric} weights file {str(p)!r} does not exist. {how_to}")
    try:
        if p.suffix == ".safetensors":
            data = safetensors.torch.load_file(str(p), device="cpu")
        else:
            data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure becomes one clear message
        raise ValueError(f"{metric} weights file {str(p)!r} could not be read as "
                         f"{'safetensors' if p.suffix == '.safetensors' else 'a torch weights_only file'} "
                         f"({type(err).__name__}: {err}). {how_to}") from err
    if not isinstance(data, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()):
        raise ValueError(f"{metric} weights file {str(p)!r} must hold a flat mapping name -> tensor. {how_to}")
    return {k: v.detach().float() for k, v in data.items()}


def check_shapes(tensors: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], where: str,
                 how_to: str) -> None:
    """Raise ``ValueError`` listing the missing keys and wrong shapes of ``tensors`` against ``expected``."""
    missing = [k for k in expected if k not in tensors]
    wrong = [f"{k} {tuple(tensors[k].shape)} (expected {v})" for k, v in expected.items()
             if k in tensors and tuple(tensors[k].shape) != tuple(v)]
    if missing or wrong:
        parts = ([f"missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}"] if missing else []) + (
            [f"wrong shapes: {'; '.join(wrong[:6])}"] if wrong else [])
        raise ValueError(f"{where}: {', '.join(parts)}. {how_to}")


def load_trunk(tensors: Mapping[str, Tensor], pool: Literal["max", "l2"]) -> VGG16Trunk:
    """A :class:`VGG16Trunk` holding the ``features.*`` tensors of an already shape-checked mapping."""
    trunk = VGG16Trunk(pool)
    shapes = vgg16_feature_shapes()
    trunk.load_state_dict({k: tensors[k] for k in shapes}, strict=True)
    return trunk.eval()


def vgg16_features(state: Mapping[str, Tensor], how_to: str = "") -> dict[str, Tensor]:
    """The 26 ``features.*`` tensors of a VGG16 state dict (torchvision layout), shape-checked."""
    shapes = vgg16_feature_shapes()
    check_shapes(state, shapes, "VGG16 state dict", how_to or "Pass torchvision.models.vgg16(...).state_dict().")
    return {k: state[k] for k in shapes}


def save_weights_file(path: str | os.PathLike, tensors: Mapping[str, Tensor]) -> Path:
    """Write a flat name -> tensor file: safetensors when ``path`` ends in ``.safetensors``, else ``torch.save``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    if p.suffix == ".safetensors":
        safetensors.torch.save_file(data, str(p))
    else:
        torch.save(data, p)
    return p
