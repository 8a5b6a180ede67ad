"""The distance contract, the registry every distance lives in, and the shared input checks.

A distance maps a pair of image batches (x, x_hat), both (B, C, H, W) in [-1, 1], to a (B,) tensor: 0 for identical
inputs, higher = more different. Like the authors' code, every distance first maps the images to [0, 1] with
(x + 1) / 2 and clamps them to [0, 1] (reconstructions may overshoot). The result has the input's device and dtype.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from diffguard.registry import Registry

DISTANCES: Registry[Distance] = Registry("distance")
"""All distances, by name: ``DISTANCES.create("l2")``; see :func:`list_distances`."""


def create_distance(name: str, **kwargs: Any) -> Distance:
    """Instantiate the distance registered under ``name`` (keyword arguments go to its constructor)."""
    return DISTANCES.create(name, **kwargs)


def list_distances(pattern: str = "*") -> list[str]:
    """Sorted names of the registered distances matching a shell-style wildcard ``pattern``."""
    return DISTANCES.list(pattern)


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] images -> [0, 1] images, clamped: clamp((x + 1) / 2, 0, 1), as the authors' ``minus_1_1_to_01``."""
    return ((x + 1) / 2).clamp(0, 1)


def check_pair(x: Tensor, x_hat: Tensor, name: str, channels: tuple[int, ...] | None = None) -> None:
    """Raise ``ValueError`` unless x and x_hat are finite float images (B, C, H, W) of equal shape, dtype, device.

    Args:
        x, x_hat: the two image batches, (B, C, H, W) in [-1, 1].
        name: the distance's name, for the messages.
        channels: the channel counts the distance accepts (None accepts any).
    """
    for label, t in (("x", x), ("x_hat", x_hat)):
        if not isinstance(t, Tensor):
            raise ValueError(f"distance {name!r}: {label} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"distance {name!r}: {label} must be images (B, C, H, W), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"distance {name!r}: {label} must be a float tensor in [-1, 1], got {t.dtype}")
    if x.shape != x_hat.shape:
        raise ValueError(f"distance {name!r}: x and x_hat differ in shape: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    if x.dtype != x_hat.dtype or x.device != x_hat.device:
        raise ValueError(f"distance {name!r}: x and x_hat differ in dtype/device: {x.dtype} on {x.device} vs "
                         f"{x_hat.dtype} on {x_hat.device}; convert one with .to(other)")
    if channels is not None and x.shape[1] not in channels:
        raise ValueError(f"distance {name!r} takes images with {' or '.join(map(str, channels))} channels, "
                         f"got {x.shape[1]}")
    for label, t in (("x", x), ("x_hat", x_hat)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"distance {name!r}: {label} contains NaN or inf values; check the model that made it")


class Distance:
    """Base class: ``__call__`` checks the inputs, then :meth:`compute` does the work.

    Subclasses set ``name`` (the registry name) and ``channels`` (accepted channel counts, None for any).
    """

    name: ClassVar[str] = ""
    channels: ClassVar[tuple[int, ...] | None] = None

    def __call__(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """x, x_hat: (B, C, H, W) in [-1, 1] -> (B,) distances, >= 0, 0 for identical inputs."""
        check_pair(x, x_hat, self.name, self.channels)
        return self.compute(x, x_hat)

    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """The distance on checked inputs; see the subclass docstring."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
