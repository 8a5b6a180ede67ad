"""The baseline-detector contract, the ``BASELINES`` registry and shared helpers.

Every baseline is built as ``Cls(classifier, **params)`` (``classifier``: a
:class:`~diffguard.classify.base.ModuleClassifier`-like adapter) and has

* ``name`` (registry key, OpenOOD's short name), ``display_name`` (the paper's table name), ``needs_images``;
* ``params() -> dict`` (its hyper-parameters, for reports) and ``fit(train: ClassifierOutputs) -> self`` (a no-op
  when there is nothing to fit; KNN / ViM / MDS fit on ID-train outputs);
* ``score(out: ClassifierOutputs) -> (N,) float64`` when ``needs_images`` is False (works on cached logits and
  features), or ``score_images(x, ids) -> (B,) float64`` when it is True (x: (B, C, H, W) in [-1, 1], ids: (B,)
  int64 stable sample ids used to seed per-sample randomness).

Scores are OOD scores: higher = more OOD. Where OpenOOD defines a confidence (higher = ID), score = -confidence.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffguard.registry import Registry


@dataclass
class ClassifierOutputs:
    """One cached classifier pass.

    logits: (N, K) float32; features: (N, D) float32 penultimate features; labels: (N,) int64 class labels with
    -1 for OOD, or None; ids: (N,) int64 stable sample ids, or None (then a row's position stands in for its id,
    which only matters to baselines with per-sample randomness such as MC-Dropout).
    """

    logits: Tensor
    features: Tensor
    labels: Tensor | None = None
    ids: Tensor | None = None

    def __post_init__(self) -> None:
        if self.logits.ndim != 2 or self.features.ndim != 2 or self.logits.shape[0] != self.features.shape[0]:
            raise ValueError(f"expected logits (N, K) and features (N, D), got {tuple(self.logits.shape)} and "
                             f"{tuple(self.features.shape)}")
        for name in ("labels", "ids"):
            v = getattr(self, name)
            if v is not None and tuple(v.shape) != (self.logits.shape[0],):
                raise ValueError(f"{name} must be ({self.logits.shape[0]},), got {tuple(v.shape)}")

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def row_ids(self) -> Tensor:
        """(N,) int64: ``ids`` when given, else 0..N-1."""
        return self.ids.long() if self.ids is not None else torch.arange(len(self), device=self.logits.device)


@torch.no_grad()
def classifier_outputs(classifier: Any, x: Tensor, labels: Tensor | None = None, ids: Tensor | None = None,
                       batch_size: int = 256) -> ClassifierOutputs:
    """Run ``classifier.logits_and_features`` over images x (N, C, H, W) in [-1, 1] in batches (float32 results)."""
    logits, feats = [], []
    for i in range(0, x.shape[0], batch_size):
        lo, fe = classifier.logits_and_features(x[i: i + batch_size])
        logits.append(lo.float())
        feats.append(fe.float())
    return ClassifierOutputs(torch.cat(logits), torch.cat(feats), labels, ids)


class Baseline:
    """Defaults shared by the baselines: nothing to fit, no hyper-parameters, scores from cached outputs."""

    name = ""
    display_name = ""
    needs_images = False

    def params(self) -> dict[str, Any]:
        return {}

    def fit(self, train: ClassifierOutputs) -> Baseline:
        return self

    def score(self, out: ClassifierOutputs) -> Tensor:
        raise NotImplementedError(f"{self.name} scores images: call score_images(x, ids)")

    def score_images(self, x: Tensor, ids: Tensor) -> Tensor:
        raise NotImplementedError(f"{self.name} scores cached classifier outputs: call score(outputs)")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


BASELINES: Registry[Baseline] = Registry("baseline")
ALIASES = {"dropout": "mc_dropout", "mcdropout": "mc_dropout", "deep_ensemble": "ensemble"}
_MODULES = ("msp", "odin", "ebo", "mls", "knn", "vim", "mds", "mc_dropout", "ensemble", "diffnb")


def _load_all() -> None:
    for mod in _MODULES:
        importlib.import_module(f"diffguard.detectors.{mod}")


def create_baseline(name: str, classifier: Any, **params: Any) -> Baseline:
    """Build a baseline by registry name (or alias, e.g. ``"dropout"``); unknown names suggest close matches."""
    _load_all()
    return BASELINES.create(ALIASES.get(name, name), classifier=classifier, **params)


def list_baselines(pattern: str = "*") -> list[str]:
    """Registered baseline names (aliases not included) matching a shell-style pattern."""
    _load_all()
    return BASELINES.list(pattern)


# ----- small numeric helpers shared by several baselines -----

def msp_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """-max softmax(z / T) in float64: (N, K) -> (N,)."""
    return -torch.softmax(logits.double() / temperature, dim=1).amax(dim=1)


def check_outputs(out: ClassifierOutputs, need_labels: bool = False) -> None:
    """Refuse empty or non-finite cached outputs (and missing labels when ``need_labels``)."""
    if len(out) == 0:
        raise ValueError("no rows to score or fit on")
    if not (torch.isfinite(out.logits).all() and torch.isfinite(out.features).all()):
        raise ValueError("logits or features contain NaN/inf: check the classifier outputs before scoring")
    if need_labels and out.labels is None:
        raise ValueError("this baseline fits on labelled ID-train outputs: pass ClassifierOutputs(..., labels=...)")
