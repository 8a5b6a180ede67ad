"""The tuning objective: worst csid set (severity 3 reported only), cascade cost."""

from __future__ import annotations

import numpy as np
import pytest

from diffguard.tune.objective import Objective


def test_the_worst_csid_set_is_penalised_and_severity_3_only_reported() -> None:
    val = np.arange(100, dtype=float)                       # threshold = 95th percentile = 94.05
    ood = {"val-ood": np.arange(50, 150, dtype=float)}
    csid = {"val-csid-noise-1": np.full(10, 0.0), "val-csid-noise-2": np.r_[np.full(7, 0.0), np.full(3, 200.0)],
            "val-csid-blur-3": np.full(10, 200.0)}
    ev = Objective(penalty=1.0).evaluate(val, ood, csid)
    assert ev.csid_flag_rate == pytest.approx(0.3)           # the worst penalised set; blur-3 (100 %) not penalised
    assert ev.csid_per_set == {"val-csid-noise-1": 0.0, "val-csid-noise-2": 0.3, "val-csid-blur-3": 1.0}
    assert ev.objective == pytest.approx(ev.mean_auroc - 0.25)
    one = Objective().evaluate(val, ood, {"val-csid": csid["val-csid-noise-2"]})
    assert one.csid_flag_rate == pytest.approx(0.3)          # a single mixed set: its own share, as before


def test_cascade_cost_trades_auroc_for_the_diffguard_share() -> None:
    val, ood = np.arange(100, dtype=float), {"val-ood": np.arange(50, 150, dtype=float)}
    free = Objective().evaluate(val, ood, diffguard_share=0.4)
    paid = Objective(cascade_cost=0.5).evaluate(val, ood, diffguard_share=0.4)
    assert paid.objective == pytest.approx(free.objective - 0.2) and paid.diffguard_share == 0.4
    assert "diffguard_share" in Objective(cascade_cost=0.5).statement()
    assert "diffguard_share" not in Objective().statement()


def test_far_ood_passed_at_the_threshold_is_charged_for_the_named_far_sets() -> None:
    val = np.arange(100, dtype=float)                       # threshold 94.05
    ood = {"val-ood": np.arange(50, 150, dtype=float),       # 45 of 100 at or below: near-OOD, not charged
           "val-far": np.r_[np.full(4, 10.0), np.full(96, 500.0)]}  # 4 % passed
    plain = Objective().evaluate(val, ood)
    far = Objective(far_penalty=2.0, far_sets=("val-far",)).evaluate(val, ood)
    assert plain.far_pass_rate is None and far.far_pass_rate == pytest.approx(0.04)
    assert far.objective == pytest.approx(plain.objective - 0.08) and far.mean_auroc == plain.mean_auroc
    reported = Objective(far_sets=("val-far",)).evaluate(val, ood)  # weight 0: reported, objective unchanged
    assert reported.far_pass_rate == pytest.approx(0.04) and reported.objective == plain.objective
    assert "far_pass_rate" in Objective(far_penalty=1.0, far_sets=("val-far",)).statement()
    with pytest.raises(ValueError, match=r"not OOD-validation sets.*val-ood"):
        Objective(far_penalty=1.0, far_sets=("val-fra",)).evaluate(val, ood)
    with pytest.raises(ValueError, match="far_sets"):
        Objective(far_penalty=1.0)
