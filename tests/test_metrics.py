"""Metrics: hand-worked examples (with ties), scikit-learn cross-checks, both FPR@95 conventions, aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

from diffguard.evaluation.ood_metrics import (
    METRIC_KEYS,
    MetricsAccumulator,
    accuracy,
    aupr_in,
    aupr_out,
    auroc,
    compute_metrics,
    fpr_at_95_id,
    fpr_at_95_ood,
    mean_std,
    summarize,
)

# Hand example with ties (OOD scores higher = more OOD).
#   ID  = [0.1, 0.4, 0.4, 0.8]   OOD = [0.4, 0.9]
# OOD-positive ROC, thresholds 0.9, 0.8, 0.4, 0.1 (score >= thr flagged; the three 0.4 enter together):
#   (fp, tp) = (0,1), (1,1), (3,2), (4,2)  ->  points (0,0) (0,.5) (.25,.5) (.75,1) (1,1)
#   AUROC = .25*.5 + .5*(.5+1)/2 + .25*1 = .125 + .375 + .25 = .75
#     (pairwise: OOD 0.9 beats all 4; OOD 0.4 beats 0.1, ties twice (.5 each), loses to 0.8 -> 6/8)
#   FPR@95 OOD-pos: first point with TPR >= .95 is (.75, 1) -> 0.75
# ID-positive ROC on -score: -ID = [-.1,-.4,-.4,-.8], -OOD = [-.4,-.9]; thresholds -.1, -.4, -.8, -.9:
#   (fp, tp) = (0,1), (1,3), (1,4), (2,4) -> TPR .25, .75, 1, 1; FPR 0, .5, .5, 1
#   FPR@95 ID-pos: first TPR >= .95 is at -.8 -> FPR 0.5
# AUPR-OUT: recall 0, .5, .5, 1, 1; precision 1, 1, 1/2, 2/5, 2/6
#   = .5*(1+1)/2 + 0 + .5*(.5+.4)/2 + 0 = .5 + .225 = .725
# AUPR-IN: recall 0, .25, .75, 1, 1; precision 1, 1, 3/4, 4/5, 4/6
#   = .25*1 + .5*(1+.75)/2 + .25*(.75+.8)/2 + 0 = .25 + .4375 + .19375 = .88125
HAND_ID = [0.1, 0.4, 0.4, 0.8]
HAND_OOD = [0.4, 0.9]


def test_hand_example_with_ties():
    m = compute_metrics(np.array(HAND_ID), torch.tensor(HAND_OOD, dtype=torch.float64))
    assert list(m) == list(METRIC_KEYS)
    assert m["AUROC"] == pytest.approx(0.75, abs=1e-12)
    assert m["FPR@95 (OOD-pos, v1.5)"] == pytest.approx(0.75, abs=1e-12)
    assert m["FPR@95 (ID-pos, paper)"] == pytest.approx(0.5, abs=1e-12)
    assert m["AUPR-OUT"] == pytest.approx(0.725, abs=1e-12)
    assert m["AUPR-IN"] == pytest.approx(0.88125, abs=1e-12)


def test_perfect_and_reversed_separation():
    # ID all below OOD: every OOD caught before any ID -> AUROC 1, both FPRs 0, both AUPRs 1.
    m = compute_metrics([0.0, 1.0, 2.0], [3.0, 4.0])
    assert m == {k: (0.0 if "FPR" in k else 1.0) for k in METRIC_KEYS}
    # Reversed: catching 95 % of OOD flags every ID; keeping 95 % of ID accepts every OOD.
    r = compute_metrics([3.0, 4.0], [0.0, 1.0, 2.0])
    assert r["AUROC"] == 0.0 and r["FPR@95 (OOD-pos, v1.5)"] == 1.0 and r["FPR@95 (ID-pos, paper)"] == 1.0


def test_exact_95_percent_boundary():
    # 20 OOD: 19 above every ID, 1 below all of them. TPR reaches exactly 19/20 = .95 with no ID flagged.
    ood = np.r_[np.arange(19) + 10.0, -5.0]
    ind = np.arange(10.0)
    assert fpr_at_95_ood(ind, ood) == 0.0
    # 20 ID: 19 below every OOD, 1 above all -> keeping 95 % of ID accepts no OOD.
    assert fpr_at_95_id(np.r_[np.arange(19.0), 100.0], np.arange(5.0) + 50) == 0.0


def _sk_fpr(y, s):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr[np.argmax(tpr >= 0.95)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [1, 6])  # 1 decimal: many ties
def test_matches_sklearn(seed, decimals):
    rng = np.random.default_rng(seed)
    ind = np.round(rng.normal(0, 1, 300), decimals)
    ood = np.round(rng.normal(0.8, 1.5, 200), decimals)
    s = np.r_[ind, ood]
    y_ood = np.r_[np.zeros(ind.size), np.ones(ood.size)]
    assert auroc(ind, ood) == pytest.approx(roc_auc_score(y_ood, s), abs=1e-12)
    assert fpr_at_95_ood(ind, ood) == pytest.approx(_sk_fpr(y_ood, s), abs=1e-12)
    assert fpr_at_95_id(ind, ood) == pytest.approx(_sk_fpr(1 - y_ood, -s), abs=1e-12)
    p, r, _ = precision_recall_curve(y_ood, s)
    assert aupr_out(ind, ood) == pytest.approx(auc(r, p), abs=1e-12)
    p, r, _ = precision_recall_curve(1 - y_ood, -s)
    assert aupr_in(ind, ood) == pytest.approx(auc(r, p), abs=1e-12)


def test_fpr_conventions_differ_when_asymmetric_and_agree_when_mirrored():
    rng = np.random.default_rng(5)
    ind = rng.normal(-1.0, 1.0, 1000)
    ood = rng.normal(0.0, 1.5, 1000)  # wider OOD: v1.5 FPR is much larger than v1's
    assert fpr_at_95_ood(ind, ood) > fpr_at_95_id(ind, ood) + 0.1
    # Mirror-symmetric: the ID multiset is c - OOD, so the two ROCs are the same curve.
    ood = np.round(rng.normal(1.0, 1.3, 400), 1)
    ind = 0.5 - rng.permutation(ood)
    assert fpr_at_95_ood(ind, ood) == pytest.approx(fpr_at_95_id(ind, ood), abs=1e-12)


@pytest.mark.parametrize("fn", [auroc, fpr_at_95_ood, fpr_at_95_id, aupr_in, aupr_out, compute_metrics])
def test_refuses_bad_input(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([], [1.0])
    with pytest.raises(ValueError, match="empty"):
        fn([1.0], np.array([]))
    with pytest.raises(ValueError, match="2 NaN"):
        fn([1.0, np.nan, np.nan], [2.0])
    with pytest.raises(ValueError, match="1-D"):
        fn(np.ones((2, 2)), [2.0])


def test_accuracy_ignores_ood_rows():
    assert accuracy(torch.tensor([0, 1, 2, -1, -1]), np.array([0, 1, 0, 5, 5])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="ID row"):
        accuracy([-1, -1], [0, 0])
    with pytest.raises(ValueError, match="differ"):
        accuracy([0, 1], [0])


def test_summarize_unweighted_group_means():
    per = {"a": {"AUROC": 0.9, "X": 1.0}, "b": {"AUROC": 0.7, "X": 3.0}, "c": {"AUROC": 0.5, "X": 5.0}}
    out = summarize(per, {"near": ["a", "b"], "far": ["c"]})
    assert list(out) == ["a", "b", "c", "near", "far", "all"]
    assert out["near"] == pytest.approx({"AUROC": 0.8, "X": 2.0})
    assert out["far"] == pytest.approx({"AUROC": 0.5, "X": 5.0})
    assert out["all"] == pytest.approx({"AUROC": 0.7, "X": 3.0})
    with pytest.raises(KeyError, match="unknown sets"):
        summarize(per, {"near": ["a", "zz"]})
    with pytest.raises(ValueError, match="empty"):
        summarize(per, {"near": []})


def test_mean_std_over_seeds():
    runs = [{"AUROC": 0.8, "F": 0.2}, {"AUROC": 0.6, "F": 0.4}]
    out = mean_std(runs)
    assert out["AUROC"] == pytest.approx({"mean": 0.7, "std": 0.1})
    assert mean_std(runs, ddof=1)["F"]["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    with pytest.raises(ValueError, match="same metrics"):
        mean_std([{"AUROC": 1.0}, {"F": 1.0}])


def test_accumulator_matches_direct_computation():
    acc = MetricsAccumulator()
    acc.update(torch.tensor([0.1, 0.4, 0.4], dtype=torch.float64), torch.tensor([0, 1, -1]), torch.tensor([0, 0, 3]))
    acc.update(np.array([0.8, 0.9, 0.4]), np.array([2, -1, 1]), np.array([2, 1, 1]))
    out = acc.compute()
    ref = compute_metrics(HAND_ID, HAND_OOD)
    assert out["AUROC"] == pytest.approx(ref["AUROC"]) and out["AUPR-IN"] == pytest.approx(ref["AUPR-IN"])
    assert out["ACC"] == pytest.approx(3 / 4)  # ID rows: (0,0) ok, (1,0) wrong, (2,2) ok, (1,1) ok
    bad = MetricsAccumulator()
    bad.update([0.1], [0])
    with pytest.raises(ValueError, match="both ID and OOD"):
        bad.compute()
    with pytest.raises(ValueError, match="every update"):
        bad.update([0.2], [-1], [0])
