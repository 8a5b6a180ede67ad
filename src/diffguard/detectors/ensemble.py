"""Deep Ensemble (Lakshminarayanan et al., NeurIPS 2017; OpenOOD ``ensemble``).

OpenOOD: N independently trained networks (``num_networks: 5``), logits averaged before the softmax (not
probabilities), conf = max softmax(mean logits). Our OOD score is -conf. The members are classifier adapters passed
as ``members``; :func:`fmnist6_ensemble` loads the shipped fmnist6 classifier plus every shipped
``fmnist6-classifier-s{N}`` sibling (same format, other training seeds).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffguard.classify.adapter import fmnist6_classifier
from diffguard.detectors.detector import BASELINES, Baseline, Needs, msp_score
from diffguard.detectors.search_space import Space
from diffguard.model_files import shipped_path


@BASELINES.register("ensemble")
class DeepEnsemble(Baseline):
    """Score = -max softmax(mean_m z_m(x)).

    Args:
        classifier: the protected classifier (not added to the members automatically; it is kept for reference).
        members: >= 2 classifier adapters with ``logits`` on [-1, 1] images and the same classes.
    """

    name = "ensemble"
    display_name = "Deep Ensemble"
    needs = Needs(images=True, members=True)
    search_space = Space()  # nothing to search: one trial with the defaults

    def __init__(self, classifier: Any = None, members: Sequence[Any] | None = None):
        if members is None or len(members) < 2:
            raise ValueError("Deep Ensemble needs members=[>= 2 classifier adapters]; for fmnist6 use "
                             "diffguard.detectors.ensemble.fmnist6_ensemble()")
        self.classifier = classifier
        self.members = list(members)

    def params(self) -> dict[str, Any]:
        return {"members": len(self.members)}

    @torch.no_grad()
    def score_images(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) in [-1, 1] -> (B,) float64 in [-1, -1/K]. ``ids`` is unused (deterministic)."""
        logits = [m.logits(x).double() for m in self.members]
        if len({lo.shape for lo in logits}) != 1:
            raise ValueError(f"members disagree on the logit shape: {[tuple(lo.shape) for lo in logits]}")
        return msp_score(torch.stack(logits).mean(dim=0))


def ensemble_folders(weights_dir: Path | None = None) -> list[Path]:
    """The shipped ``fmnist6-classifier`` folder followed by its ``-s{N}`` siblings that exist, N ascending."""

    base = shipped_path("classifier")
    root = Path(weights_dir) if weights_dir is not None else base.parent
    pattern = re.compile(re.escape(base.name) + r"-s(\d+)$")
    seeds = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := pattern.match(p.name)) and p.is_dir())
    return [root / base.name] + [p for _, p in seeds]


def fmnist6_ensemble(folders: Sequence[str | Path] | None = None) -> list[Any]:
    """Classifier adapters for a Deep Ensemble: the given folders, or the shipped classifier plus its ``-sN`` seeds.

    Raises:
        ValueError: fewer than 2 members (train more classifiers with other seeds).
    """

    paths = [Path(f) for f in folders] if folders is not None else ensemble_folders()
    if len(paths) < 2:
        raise ValueError(f"a Deep Ensemble needs >= 2 classifiers, found {[str(p) for p in paths]}; ship "
                         "fmnist6-classifier-s1, -s2, ... next to fmnist6-classifier or pass folders=[...]")
    return [fmnist6_classifier(str(p)) for p in paths]
