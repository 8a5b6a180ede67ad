"""Calibrating a guard part on ID-val runs its detector once per batch, whatever columns the fusion reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from diffguard.detectors.detector import Scored
from diffguard.guard.export import _calibrate_part
from diffguard.guard.parts import Part
from diffguard.specs.method_specs import MethodConfig


class CountingDetector:
    """A stand-in for DiffGuard: score = mean pixel, a guided ``label`` and two distance columns; counts passes."""

    def __init__(self) -> None:
        self.calls = 0

    def details(self, x: torch.Tensor, ids: torch.Tensor) -> Scored:
        self.calls += 1
        s = x.flatten(1).mean(1)
        return Scored(s, {"label": (ids % 3).long(), "dist:gmsd": 2 * s, "dist:logits_l1": s + 1})


def test_calibration_runs_the_detector_once_per_batch_and_keeps_every_column() -> None:
    det = CountingDetector()
    part = Part(MethodConfig("dg", method="diffguard", calibration="class"), det)
    runner = SimpleNamespace(classifier=None, device=torch.device("cpu"))
    x = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ids = torch.arange(10)
    out = _calibrate_part(part, runner, x, ids, batch_size=4, progress=False,
                          columns=("dist:gmsd", "dist:logits_l1"))
    assert det.calls == 3  # ceil(10 / 4) batches, one pass each
    raw = x.flatten(1).mean(1).double().numpy()
    np.testing.assert_allclose(out["dist:gmsd"], 2 * raw, rtol=1e-6)
    np.testing.assert_allclose(out["dist:logits_l1"], raw + 1, rtol=1e-6)
    assert part.calibration is not None
    np.testing.assert_allclose(out["score"], part.calibration(raw, (ids % 3).numpy()), rtol=1e-6)
