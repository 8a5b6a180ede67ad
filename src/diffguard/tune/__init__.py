"""Hyper-parameter search on validation data only (``diffguard tune``).

* :mod:`~diffguard.tune.space`: each detector's search space (declared beside its code as ``search_space``: OpenOOD
  v1.5 sweeps, DiffGuard's own), the fusion rule's, and setting drawn values on a method spec;
* :mod:`~diffguard.tune.objective`: the stated objective (mean OOD-val AUROC, csid false-alarm penalty);
* :mod:`~diffguard.tune.data`: the gate that lets only train / val / val_ood / val_csid sets through;
* :mod:`~diffguard.tune.trials`: one trial's scoring and DiffGuard's post-hoc distance ranking;
* :mod:`~diffguard.tune.study`: Optuna studies in ``<out>/tune.sqlite`` (resumable, every trial recorded);
* :mod:`~diffguard.tune.tuner`: :func:`tune`, methods and fusion rules; :mod:`~diffguard.tune.tune_report`: outputs.
"""

from __future__ import annotations

from diffguard.tune.data import Limits, TestDataRefused, ValidationData, tuning_role, tuning_sets
from diffguard.tune.objective import Evaluation, Objective
from diffguard.tune.space import FUSION_SPACE, Param, Space, apply_values, fusion_space, space_for
from diffguard.tune.tuner import tune

__all__ = ["FUSION_SPACE", "Evaluation", "Limits", "Objective", "Param", "Space", "TestDataRefused", "ValidationData",
           "apply_values", "fusion_space", "space_for", "tune", "tuning_role", "tuning_sets"]
