"""Where a run computes: resolve the ``device`` setting and move models (and the wrappers holding them) there.

Results do not depend on the device only up to float rounding, so the device is recorded in the run's manifest
(machine line) but is not part of the plan that decides whether a results file can be resumed.
"""

from __future__ import annotations

from typing import Any

import torch


def resolve_device(setting: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto": ``cuda:<local_rank>`` when CUDA is available, else the CPU; otherwise the named device.

    Raises:
        ValueError: an unknown device string, or CUDA requested on a machine without it.
    """
    if setting == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as err:
        raise ValueError(f"unknown device {setting!r} ({err}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {setting!r} requested but CUDA is not available here; use device=cpu or auto")
    return device


def to_device(obj: Any, device: torch.device, depth: int = 3) -> Any:
    """Move ``obj`` to ``device`` when it is a module; otherwise move the modules it holds (recursively through
    diffguard's own wrapper objects, ``depth`` levels). Returns ``obj``."""
    if isinstance(obj, torch.nn.Module):
        return obj.to(device)
    if depth == 0 or not type(obj).__module__.startswith("diffguard."):
        return obj
    for value in vars(obj).values():
        if isinstance(value, torch.nn.Module) or type(value).__module__.startswith("diffguard."):
            to_device(value, device, depth - 1)
    return obj
