"""Method configurations of a benchmark run, mapped onto constructors.

A method is either a DiffGuard preset (plus dotted overrides, e.g. ``guidance.scale=5`` or ``label_mode=oracle``)
or a baseline from :data:`diffguard.detectors.base.BASELINES` (plus constructor parameters). Both kinds expose one
of two scoring paths to the runner:

* ``score_outputs(outputs) -> {key: (N,)}`` on the cached classifier pass (post-hoc baselines), or
* ``score_batch(x, ids, labels) -> ({key: (B,)}, images or None)`` on image batches (DiffGuard, ODIN, ensembles,
  DiffNB).

Every result has the key ``"score"`` (higher = more OOD).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

Kind = Literal["diffguard", "baseline"]


@dataclass(frozen=True)
class MethodConfig:
    """One method of a run.

    Args:
        name: unique key in the results (e.g. ``"diffguard-cfg"``, ``"knn"``).
        kind: "diffguard" or "baseline".
        preset: DiffGuard preset name (kind "diffguard").
        overrides: DiffGuard dotted overrides, e.g. ``("guidance.scale=5", "label_mode=oracle")``.
        baseline: baseline registry name (kind "baseline"; default: ``name``).
        params: baseline constructor parameters, or the DiffGuard preset's arguments (e.g. ``dists_weights``).
        display: name in tables (default: ``name``).
        batch_size: images per batch for this method (default: the run's).
    """

    name: str
    kind: Kind = "baseline"
    preset: str = ""
    overrides: tuple[str, ...] = ()
    baseline: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    display: str = ""
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("diffguard", "baseline"):
            raise ValueError(f"method {self.name!r}: kind must be 'diffguard' or 'baseline', got {self.kind!r}")
        if self.kind == "diffguard" and not self.preset:
            raise ValueError(f"method {self.name!r}: a diffguard method needs a preset")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MethodConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"method entry {d.get('name', d)!r}: unknown key(s) {unknown}; valid: {sorted(known)}")
        d = dict(d)
        d["overrides"] = tuple(d.get("overrides", ()))
        return cls(**d)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "preset": self.preset, "overrides": list(self.overrides),
                "baseline": self.baseline or (self.name if self.kind == "baseline" else ""),
                "params": dict(self.params), "batch_size": self.batch_size, "display": self.display}

    @property
    def title(self) -> str:
        return self.display or self.name


class DiffGuardMethod:
    """Adapter from a :class:`~diffguard.detectors.diffguard.DiffGuard` to the runner's batch interface."""

    needs_images = True

    def __init__(self, detector: Any):
        self.detector = detector

    def score_batch(self, x: Tensor, ids: Tensor, labels: Tensor) -> tuple[dict[str, np.ndarray], np.ndarray]:
        r = self.detector.analyze(x, y_true=labels, ids=ids)
        out = {"score": r.score, **{f"dist:{k}": v for k, v in r.distances.items()},
               "label": r.labels, "stop": r.stop_level, "start": r.start_level}
        return {k: v.detach().double().cpu().numpy() for k, v in out.items()}, _to_uint8(r.synthesis)


class BaselineMethod:
    """Adapter from a baseline (``score`` on cached outputs or ``score_images``) to the runner's interface."""

    def __init__(self, baseline: Any):
        self.baseline = baseline
        self.needs_images = bool(getattr(baseline, "needs_images", False))

    def fit(self, train: Any) -> None:
        self.baseline.fit(train)

    def score_outputs(self, outputs: Any) -> dict[str, np.ndarray]:
        return {"score": self.baseline.score(outputs).double().cpu().numpy()}

    def score_batch(self, x: Tensor, ids: Tensor, labels: Tensor) -> tuple[dict[str, np.ndarray], None]:
        return {"score": self.baseline.score_images(x, ids).double().cpu().numpy()}, None


def _to_uint8(images: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def build_method(cfg: MethodConfig, classifier: Any, backend_factory: Any, members: Any = None) -> Any:
    """Instantiate a method. ``backend_factory()`` returns the diffusion backend (built lazily, shared)."""
    if cfg.kind == "diffguard":
        from diffguard.detectors.diffguard import DiffGuard
        from diffguard.presets import PRESETS, apply_overrides

        kwargs = apply_overrides(PRESETS.get(cfg.preset)(**cfg.params), list(cfg.overrides))
        return DiffGuardMethod(DiffGuard(classifier, backend_factory(), **kwargs))
    from diffguard.detectors.base import create_baseline

    name = cfg.baseline or cfg.name
    params = dict(cfg.params)
    if name == "diffnb":
        params.setdefault("backend", backend_factory())
    if name == "ensemble" and "members" not in params:
        params["members"] = members() if callable(members) else members
    return BaselineMethod(create_baseline(name, classifier, **params))
