"""GPU execution options for a network: mixed precision (autocast), channels_last memory format, torch.compile.

All options default to off, which leaves results bit for bit unchanged. Mixed precision runs the network under
``torch.autocast`` in bfloat16 or float16 and casts its output back to the input's dtype, so the DDIM arithmetic
around it stays in float32.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Literal, get_args

import torch
from torch import Tensor, nn

Precision = Literal["off", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(value: str) -> None:
    """Raise a clear ValueError unless ``value`` is one of "off", "bf16", "fp16"."""
    if value not in get_args(Precision):
        raise ValueError(f"autocast must be one of {get_args(Precision)}, got {value!r}")


def autocast(device_type: str, precision: Precision) -> ContextManager:
    """``torch.autocast`` for the device type in the given precision; a no-op context for "off"."""
    if precision == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=_DTYPES[precision])


class NetworkRunner:
    """Calls ``module(x, *args, **kwargs)`` with the execution options.

    Args:
        module: the network; with ``channels_last`` its parameters are converted in place.
        autocast: "off" (default), "bf16" or "fp16".
        channels_last: 4-D inputs and weights in NHWC memory format (faster convolutions on tensor cores).
        compile: wrap the module in ``torch.compile`` (compiled on first use per input shape).
    """

    def __init__(self, module: nn.Module, autocast: Precision = "off", channels_last: bool = False,
                 compile: bool = False):
        check_precision(autocast)
        self.module, self.autocast, self.channels_last, self.compile = module, autocast, channels_last, compile
        if channels_last:
            module.to(memory_format=torch.channels_last)
        self._call = torch.compile(module) if compile else module

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device.type, self.autocast):
            return self._call(x, *args, **kwargs)


class DeviceCopies:
    """A (CPU) tensor copied once per device and dtype, so per-step code indexes it without host-device copies
    (a blocking copy synchronises the GPU)."""

    def __init__(self, value: Tensor):
        self.value = value
        self._copies: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def __call__(self, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
        key = (device, dtype or self.value.dtype)
        if key not in self._copies:
            self._copies[key] = self.value.to(device=device, dtype=key[1])
        return self._copies[key]
