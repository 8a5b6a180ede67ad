"""The pieces of a guard: the input geometry it takes, a part (one fitted detector), and the result of a call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from diffguard.detectors.calibration import ClassCalibration
from diffguard.errors import UserError
from diffguard.specs.method_specs import MethodConfig

QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999)


@dataclass(frozen=True)
class Geometry:
    """What the guard takes: ``channels`` x ``size`` x ``size`` images in [-1, 1] of a classifier over ``classes``."""

    classes: tuple[str, ...]
    size: int
    channels: int

    def check(self, x: Tensor) -> None:
        """Refuse a batch the guard cannot score, saying what was expected."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise UserError(f"images must be a float tensor (N, {self.channels}, {self.size}, {self.size}) in "
                            f"[-1, 1], got {type(x).__name__} {getattr(x, 'dtype', '')}")
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.channels, self.size, self.size):
            raise UserError(f"images must have shape (N, {self.channels}, {self.size}, {self.size}), got "
                            f"{tuple(x.shape)}: resize them (diffguard score does it for image files)")
        if not torch.isfinite(x).all():
            raise UserError(f"{int((~torch.isfinite(x)).sum())} pixel value(s) are NaN or infinite")
        if x.numel() and (x.min() < -1.0 - 1e-6 or x.max() > 1.0 + 1e-6):
            raise UserError(f"pixel values must lie in [-1, 1] (x / 127.5 - 1 for 8-bit images), got "
                            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")


@dataclass
class Part:
    """One detector of a guard: its method spec, the built (and fitted) detector, its calibration (or None)."""

    spec: MethodConfig
    detector: Any
    calibration: ClassCalibration | None = None

    @property
    def is_diffguard(self) -> bool:
        return bool(self.spec.needs.backend)


@dataclass
class GuardResult:
    """Per image: the score (higher = more OOD), ``is_ood`` (score above the threshold), the classifier's predicted
    label, each part's score (NaN where a part did not run) and whether DiffGuard ran."""

    score: np.ndarray
    is_ood: np.ndarray
    label: np.ndarray
    parts: dict[str, np.ndarray]
    diffguard_ran: np.ndarray
    threshold: float

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image (JSON-able)."""
        return [{"score": float(self.score[i]), "is_ood": bool(self.is_ood[i]), "label": int(self.label[i]),
                 "diffguard_ran": bool(self.diffguard_ran[i]),
                 **{f"score_{k}": float(v[i]) for k, v in self.parts.items()}} for i in range(len(self))]


def raw_and_labels(detector: Any, classifier: Any, x: Tensor, ids: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B,) raw scores and (B,) the label each was computed for: the detector's ``label`` column (DiffGuard's
    guided label), else the classifier's prediction."""
    cols = detail_columns(detector, classifier, x, ids)
    return cols["score"], cols["label"].astype(np.int64)


def detail_columns(detector: Any, classifier: Any, x: Tensor, ids: Tensor,
                   columns: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """One batch x (B, C, H, W) through ``detector.details``: {"score": (B,) raw score, "label": (B,) the label it
    was computed for (see :func:`raw_and_labels`), and each of ``columns`` (e.g. DiffGuard's ``dist:gmsd``): (B,)
    float64}."""
    scored = detector.details(x, ids)
    missing = [c for c in columns if c not in scored.columns]
    if missing:
        raise UserError(f"{type(detector).__name__} does not compute {missing} (it gives {sorted(scored.columns)}): "
                        "add the distance(s) to the method's distances")
    label = scored.columns.get("label")
    if label is None:
        with torch.no_grad():
            label = classifier.logits(x).argmax(1)
    return {"score": scored.score.double().cpu().numpy(), "label": label.cpu().numpy(),
            **{c: scored.columns[c].double().cpu().numpy() for c in columns}}


def val_quantiles(scores: np.ndarray) -> dict[str, float]:
    """Quantiles of ID-val scores at :data:`QUANTILES` (numpy's linear interpolation, as the threshold)."""
    return {f"{q:g}": float(np.quantile(scores, q)) for q in QUANTILES}
