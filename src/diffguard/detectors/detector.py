"""The one detector contract (:class:`Detector`), the ``DETECTORS`` registry and shared helpers.

Every OOD detector of the package -- DiffGuard and every baseline -- is registered by name in :data:`DETECTORS`
(a decorator next to its definition; the registry finds every module of this package) and satisfies
:class:`Detector`:

* ``name`` (registry key, OpenOOD's short name), ``display_name`` (the paper's table name) and ``needs``
  (:class:`Needs`: what its builder and runner must give it -- images, a diffusion backend, ensemble members,
  randomness, ground-truth labels -- so no caller branches on method names);
* ``params() -> dict``: its hyper-parameters (what a results folder records and ``score --from`` rebuilds);
* ``fit(data) -> self``: in-distribution training data as cached :class:`ClassifierOutputs`, an image tensor
  (N, C, H, W) in [-1, 1], an ``(images, labels)`` pair or an iterable of such batches (a ``DataLoader``); a no-op
  for detectors with nothing to fit;
* ``score(outputs) -> (N,)`` on cached classifier outputs (post-hoc detectors only, ``needs.images`` False);
* ``score_images(x, ids=None, y_true=None) -> (B,)`` on images in [-1, 1] (every detector; ``ids`` are stable
  sample ids seeding per-sample randomness, ``y_true`` ground truth with -1 for OOD for oracle modes);
* ``details(x, ids=None, y_true=None) -> Scored``: the score with extra per-sample columns and syntheses;
* ``predict(x)`` / ``__call__(x)``: ``score_images`` (pytorch-ood style), and ``to(device) -> self``.

Scores are OOD scores: higher = more OOD. Where OpenOOD defines a confidence (higher = ID), score = -confidence.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from diffguard.detectors.search_space import Space
from diffguard.devices import to_device
from diffguard.errors import UserError
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


@dataclass(frozen=True)
class Needs:
    """What a detector needs from whoever builds and runs it (declared, never inferred from its name).

    Args:
        images: it scores images (False: it scores cached classifier outputs, and images through the classifier).
        fit: it fits statistics on in-distribution training data.
        fit_labels: its fit needs labelled training data.
        backend: its constructor takes the diffusion backend as ``backend``.
        members: its constructor takes the Deep-Ensemble member classifiers as ``members``.
        randomness: it draws random numbers, seeded by its ``seed`` parameter and the sample ids.
        labels: its scores may use ground-truth labels (``y_true``; oracle modes).
    """

    images: bool = False
    fit: bool = False
    fit_labels: bool = False
    backend: bool = False
    members: bool = False
    randomness: bool = False
    labels: bool = False


@dataclass
class Scored:
    """A scored batch: ``score`` (B,) float (higher = more OOD), extra per-sample ``columns`` (each (B,)) and the
    ``images`` a detector synthesised ((B, C, H, W) in [-1, 1]), if any."""

    score: Tensor
    columns: dict[str, Tensor] = field(default_factory=dict)
    images: Tensor | None = None


@runtime_checkable
class Detector(Protocol):
    """The contract every registered detector satisfies (see the module docstring)."""

    name: str
    display_name: str
    needs: Needs

    def params(self) -> dict[str, Any]: ...

    def fit(self, data: Any) -> Detector: ...

    def score(self, out: ClassifierOutputs) -> Tensor: ...

    def score_images(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None) -> Tensor: ...

    def details(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None) -> Scored: ...

    def predict(self, x: Tensor) -> Tensor: ...

    def to(self, device: torch.device | str) -> Detector: ...


def as_outputs(data: Any, classifier: Any, batch_size: int = 256) -> ClassifierOutputs:
    """Fit data as :class:`ClassifierOutputs`: cached outputs as they are; images (N, C, H, W) in [-1, 1], an
    ``(images, labels)`` pair, or an iterable of such batches (e.g. a ``DataLoader``) through the classifier."""
    if isinstance(data, ClassifierOutputs):
        return data
    if isinstance(data, Tensor):
        return classifier_outputs(classifier, data, batch_size=batch_size)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(v, Tensor) for v in data):
        return classifier_outputs(classifier, data[0], labels=data[1].long(), batch_size=batch_size)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        parts = [as_outputs(item if not isinstance(item, (tuple, list)) else tuple(item[:2]), classifier, batch_size)
                 for item in data]
        if not parts:
            raise UserError("fit data is empty: give in-distribution training images")
        labels = [p.labels for p in parts]
        return ClassifierOutputs(torch.cat([p.logits for p in parts]), torch.cat([p.features for p in parts]),
                                 None if any(v is None for v in labels) else torch.cat(labels))
    raise UserError(f"cannot fit on {type(data).__name__}: give ClassifierOutputs, an image tensor (N, C, H, W) "
                    "in [-1, 1], an (images, labels) pair or a DataLoader of them")


class DetectorBase:
    """Defaults of the contract: nothing to fit, no hyper-parameters, nothing for ``diffguard tune`` to search (one
    trial with the defaults), images scored through cached outputs."""

    name = ""
    display_name = ""
    needs = Needs()
    search_space = Space()

    def params(self) -> dict[str, Any]:
        return {}

    def fit(self, data: Any = None) -> DetectorBase:
        """Fit on in-distribution training data (see :func:`as_outputs`); a no-op when there is nothing to fit."""
        if not self.needs.fit:
            return self
        if data is None:
            raise UserError(f"{self.name} fits on in-distribution training data: call fit(images or outputs)")
        self.fit_outputs(as_outputs(data, getattr(self, "classifier", None)))
        return self

    def fit_outputs(self, train: ClassifierOutputs) -> None:
        """Fit on cached ID-train outputs (detectors with ``needs.fit`` override this)."""

    def score(self, out: ClassifierOutputs) -> Tensor:
        raise NotImplementedError(f"{self.name} scores images: call score_images(x, ids)")

    def score_images(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None) -> Tensor:
        """(B,) float64 scores of images x (B, C, H, W) in [-1, 1], through the classifier's cached outputs."""
        classifier = getattr(self, "classifier", None)
        if classifier is None:
            raise UserError(f"{self.name} was built without a classifier: it can only score cached outputs")
        return self.score(classifier_outputs(classifier, x, ids=ids))

    def details(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None) -> Scored:
        return Scored(self.score_images(x, ids, y_true))

    def predict(self, x: Tensor) -> Tensor:
        """OOD scores (B,) of images x (B, C, H, W) in [-1, 1], higher = more OOD."""
        return self.score_images(x)

    def __call__(self, x: Tensor) -> Tensor:
        return self.predict(x)

    def to(self, device: torch.device | str) -> DetectorBase:
        """Move the models and fitted statistics this detector holds to ``device``; returns self."""
        move_to(self, torch.device(device))
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


Baseline = DetectorBase  # the name the baseline modules use


def move_to(obj: Any, device: torch.device) -> None:
    """Move every module and tensor attribute of ``obj`` (and inside its lists, dicts and diffguard-owned
    attributes) to ``device``, in place."""

    for key, value in list(vars(obj).items()):
        if isinstance(value, Tensor):
            setattr(obj, key, value.to(device))
        elif isinstance(value, dict):
            setattr(obj, key, {k: v.to(device) if isinstance(v, Tensor) else to_device(v, device)
                               for k, v in value.items()})
        elif isinstance(value, (list, tuple)):
            setattr(obj, key, type(value)(v.to(device) if isinstance(v, Tensor) else to_device(v, device)
                                          for v in value))
        else:
            to_device(value, device)


DETECTORS: Registry[Detector] = Registry("detector")
BASELINES = DETECTORS  # the decorator name the baseline modules use
ALIASES = {"dropout": "mc_dropout", "mcdropout": "mc_dropout", "deep_ensemble": "ensemble"}


def load_all() -> None:
    """Import every module of this package, so each registers its detector (no hand-kept list). The package's
    folder is listed, never imported here: its ``__init__`` imports this module."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{info.name}")


def detector_factory(name: str) -> Any:
    """The registered factory (class or function) of detector ``name`` (aliases accepted)."""
    load_all()
    return DETECTORS.get(ALIASES.get(name, name))


def needs_of(name: str) -> Needs:
    """What detector ``name`` needs (its factory's ``needs``)."""
    return getattr(detector_factory(name), "needs", Needs())


def create_detector(name: str, classifier: Any = None, **params: Any) -> Detector:
    """Build a detector by registry name (or alias, e.g. ``"dropout"``); unknown names suggest close matches.

    ``params`` go to its constructor: hyper-parameters, and ``backend`` / ``members`` where it ``needs`` them.
    """
    factory = detector_factory(name)
    return factory(classifier=classifier, **params)


def list_detectors(pattern: str = "*") -> list[str]:
    """Registered detector names (aliases not included) matching a shell-style pattern."""
    load_all()
    return DETECTORS.list(pattern)


create_baseline = create_detector


def list_baselines(pattern: str = "*") -> list[str]:
    """Registered detector names other than DiffGuard's."""
    return [n for n in list_detectors(pattern) if n != "diffguard"]


# ----- small numeric helpers shared by several baselines -----

def msp_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """-max softmax(z / T) in float64: (N, K) -> (N,)."""
    return -torch.softmax(logits.double() / temperature, dim=1).amax(dim=1)


def check_outputs(out: ClassifierOutputs, need_labels: bool = False) -> None:
    """Refuse empty or non-finite cached outputs (and missing labels when ``need_labels``)."""
    if len(out) == 0:
        raise UserError("no rows to score or fit on")
    if not (torch.isfinite(out.logits).all() and torch.isfinite(out.features).all()):
        raise UserError("logits or features contain NaN/inf: check the classifier outputs before scoring")
    if need_labels and out.labels is None:
        raise UserError("this baseline fits on labelled ID-train outputs: pass ClassifierOutputs(..., labels=...)")
