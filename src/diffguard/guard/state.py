"""A fitted detector's state as plain data: tensors for safetensors, everything else for JSON. No pickle.

* A detector that fits (``needs.fit``: KNN's bank, ViM's basis, MDS's means and precision, ...) keeps its fitted
  statistics as attributes; :func:`detector_state` takes every tensor attribute (to safetensors, keyed
  ``<part>.<attribute>``) and every scalar attribute (to JSON), leaving out the models it holds (classifier,
  backend, members), which the guard rebuilds from their specs. :func:`restore_detector` sets them back on a
  detector built by the same builder from the same spec.
* A fusion rule (:mod:`diffguard.detectors.fusion`) is its rule name, its parameters and its fitted constants.
* A class calibration (:mod:`diffguard.detectors.calibration`) is its global and per-class (median, scale).
* :func:`describe` writes a resolved setting (dataclasses, tuples, functions) as readable JSON, for people.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffguard.detectors.calibration import ClassCalibration, create_calibration
from diffguard.detectors.fusion import BandFusion, WeightedSumFusion, create_fusion

MODELS = ("classifier", "backend", "members", "head")
Scalar = (int, float, bool, str, type(None))


def detector_state(name: str, detector: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors keyed ``<name>.<attribute>``, JSON-able scalars) of a fitted detector's own attributes."""
    tensors: dict[str, Tensor] = {}
    values: dict[str, Any] = {}
    for key, value in vars(detector).items():
        if key in MODELS:
            continue
        if isinstance(value, Tensor):
            tensors[f"{name}.{key}"] = value.detach().cpu().contiguous()
        elif isinstance(value, Scalar) and not (isinstance(value, float) and not np.isfinite(value)):
            values[key] = value
    return tensors, values


def restore_detector(name: str, detector: Any, tensors: dict[str, Tensor], values: dict[str, Any],
                     device: torch.device) -> Any:
    """Set the saved attributes back on ``detector`` (built from the same spec); returns it."""
    prefix = f"{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            setattr(detector, key[len(prefix):], value.to(device))
    for key, value in values.items():
        setattr(detector, key, value)
    return detector


def fusion_state(rule_name: str, fusion: BandFusion | WeightedSumFusion) -> dict[str, Any]:
    """``{"rule", "params", "fitted"}`` of a fitted fusion rule."""
    params = {f.name: getattr(fusion, f.name) for f in dataclasses.fields(fusion) if f.init}
    return {"rule": rule_name, "params": params, "fitted": dict(fusion.report_state())}


def restore_fusion(state: dict[str, Any]) -> BandFusion | WeightedSumFusion:
    """The fusion rule of :func:`fusion_state`, fitted constants included."""
    return create_fusion(state["rule"], **state["params"]).with_state(state["fitted"])


def calibration_state(calibration: ClassCalibration | None) -> dict[str, Any] | None:
    return None if calibration is None else calibration.state()


def restore_calibration(kind: str | None, state: dict[str, Any] | None) -> ClassCalibration | None:
    cal = create_calibration(kind)
    return None if cal is None or state is None else cal.with_state(state)


def describe(value: Any) -> Any:
    """A resolved setting as readable JSON: dataclasses by field, functions by name and bound values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
        return {"type": type(value).__name__, **fields}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, Scalar):
        return value if not (isinstance(value, float) and not np.isfinite(value)) else str(value)
    if inspect.isfunction(value) or inspect.ismethod(value):
        closure = inspect.getclosurevars(value).nonlocals if inspect.isfunction(value) else {}
        return {"function": value.__qualname__, **{k: describe(v) for k, v in closure.items()}}
    if hasattr(value, "__dict__"):
        return {"type": type(value).__name__, **{k: describe(v) for k, v in vars(value).items()
                                                 if not k.startswith("_") and not isinstance(v, torch.nn.Module)}}
    return type(value).__name__
