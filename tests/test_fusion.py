"""BandFusion ("DiffGuard + X"): thresholds, tier ordering and the two limiting rankings, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffguard.detectors.fusion import BandFusion, WeightedSumFusion

B_VAL = np.arange(11.0)  # baseline ID-val scores 0..10: quantile(.5) = 5, quantile(.9) = 9
D_VAL = np.array([0.0, 1.0, 2.0, 3.0, 4.0])


def test_thresholds_are_numpy_quantiles_and_report():
    rng = np.random.default_rng(0)
    b, d = rng.normal(size=57), rng.normal(size=31)
    f = BandFusion(0.3, 0.95).fit(b, torch.tensor(d))
    rep = f.report()
    assert rep["low_threshold"] == np.quantile(b, 0.3) and rep["high_threshold"] == np.quantile(b, 0.95)
    assert rep["low_q"] == 0.3 and rep["high_q"] == 0.95 and rep["n_val_baseline"] == 57
    assert rep["diffguard_median"] == np.median(d)
    assert BandFusion(0.0, 1.0).fit(b, d).report()["low_threshold"] == -np.inf


def test_tier_ordering():
    f = BandFusion(0.5, 0.9).fit(B_VAL, D_VAL)
    # baseline: 1 (< 5, tier 0), 5 and 7 (in [5, 9], tier 1), 9.5 (> 9, tier 2)
    b = np.array([1.0, 5.0, 7.0, 9.5, 4.9])
    d = np.array([1e6, -1e6, 3.0, -1e6, -5.0])  # DiffGuard disagrees wildly with the baseline
    assert f.tiers(b).tolist() == [0, 1, 1, 2, 0]
    fused = f.fuse(b, d)
    assert fused[0] < 1 and fused[4] < 1 and 1 <= fused[1] < fused[2] < 2 and fused[3] > 2
    # Inside tier 0 the baseline decides (1.0 < 4.9); inside tier 1 DiffGuard decides (-1e6 < 3).
    assert fused[0] < fused[4]


def test_extreme_scores_never_merge_tiers():
    f = BandFusion(0.5, 0.9).fit(B_VAL, D_VAL)
    fused = f.fuse(np.array([4.99, 5.0, 9.0, 9.01]), np.array([0.0, -1e300, 1e300, 0.0]))
    assert fused[0] < fused[1] and fused[1] < fused[2] < fused[3]
    assert np.all(np.diff(np.floor(fused)) >= 0) and np.floor(fused).tolist() == [0, 1, 1, 2]


def test_full_band_gives_diffguard_ranking():
    rng = np.random.default_rng(1)
    b, d = rng.normal(size=50), rng.normal(size=50)
    fused = BandFusion(0.0, 1.0).fit(rng.normal(size=20), rng.normal(size=20)).fuse(b * 100, d)
    assert np.array_equal(np.argsort(fused), np.argsort(d))


def test_empty_band_gives_baseline_ranking():
    rng = np.random.default_rng(2)
    b, d = rng.normal(size=50), rng.normal(size=50)
    fused = BandFusion(0.7, 0.7).fit(rng.normal(size=20), rng.normal(size=20)).fuse(b, d)
    assert np.array_equal(np.argsort(fused), np.argsort(b))


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="low_q <= high_q"):
        BandFusion(0.9, 0.5)
    with pytest.raises(ValueError, match="low_q <= high_q"):
        BandFusion(-0.1, 0.5)
    with pytest.raises(ValueError, match="1 NaN"):
        BandFusion().fit([0.0, np.nan], [1.0])
    with pytest.raises(RuntimeError, match="not fitted"):
        BandFusion().fuse([0.0], [0.0])
    f = BandFusion().fit(B_VAL, D_VAL)
    with pytest.raises(ValueError, match="same samples"):
        f.fuse([0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="NaN"):
        f.fuse([0.0], [np.nan])


# ----- WeightedSumFusion: robust z-scores on ID-val, weighted sum -----

from diffguard.detectors.fusion import create_fusion  # noqa: E402


def test_weighted_sum_is_the_documented_formula():
    # baseline ID-val 0..10: median 5, IQR 7.5 - 2.5 = 5; DiffGuard ID-val 0..4: median 2, IQR 3 - 1 = 2.
    f = WeightedSumFusion(0.25).fit(B_VAL, D_VAL)
    rep = f.report()
    assert (rep["baseline_median"], rep["baseline_scale"]) == (5.0, 5.0)
    assert (rep["diffguard_median"], rep["diffguard_scale"]) == (2.0, 2.0) and rep["weight"] == 0.25
    # b = 10 -> z_b = 1; d = 6 -> z_d = 2: 0.75 * 1 + 0.25 * 2 = 1.25
    assert f.fuse([10.0, 5.0], torch.tensor([6.0, 2.0])).tolist() == [1.25, 0.0]


def test_weighted_sum_limits_give_each_ranking_and_zero_spread_falls_back():
    rng = np.random.default_rng(3)
    b, d = rng.normal(size=40), rng.normal(size=40)
    val_b, val_d = rng.normal(size=20), rng.normal(size=20)
    assert np.array_equal(np.argsort(WeightedSumFusion(0.0).fit(val_b, val_d).fuse(b, d)), np.argsort(b))
    assert np.array_equal(np.argsort(WeightedSumFusion(1.0).fit(val_b, val_d).fuse(b, d)), np.argsort(d))
    flat = WeightedSumFusion(0.5).fit(np.ones(5), np.ones(5)).report()
    assert flat["baseline_scale"] == 1.0 and flat["diffguard_scale"] == 1.0


def test_weighted_sum_refuses_bad_input_and_rules_by_name():
    with pytest.raises(ValueError, match="weight"):
        WeightedSumFusion(1.5)
    with pytest.raises(RuntimeError, match="not fitted"):
        WeightedSumFusion().fuse([0.0], [0.0])
    with pytest.raises(ValueError, match="same samples"):
        WeightedSumFusion().fit(B_VAL, D_VAL).fuse([0.0, 1.0], [0.0])
    assert isinstance(create_fusion("band", low_q=0.2, high_q=0.9), BandFusion)
    assert create_fusion("weighted", weight=0.3).weight == 0.3
    with pytest.raises(KeyError, match="did you mean|Did you mean"):
        create_fusion("weigthed")


def test_fusion_entries_of_a_run_config_choose_their_rule() -> None:
    from diffguard.errors import ConfigError
    from diffguard.run.run_config import build_run_config

    methods = [{"name": "msp"}, {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg"}]
    cfg = build_run_config({"methods": methods, "fusion": [
        {"baseline": "msp", "diffguard": "dg"},
        {"baseline": "msp", "diffguard": "dg", "rule": "weighted", "weight": 0.25}]})
    band, weighted = cfg.fusion
    assert (band.key, weighted.key) == ("dg+msp", "dg+msp:weighted")
    assert isinstance(band.build(), BandFusion) and band.describe() == "q=(0.5, 0.99)"
    rule = weighted.build()
    assert isinstance(rule, WeightedSumFusion) and rule.weight == 0.25 and weighted.describe() == "w=0.25"
    for bad, match in (({"rule": "max"}, "unknown rule 'max'"), ({"rule": "weighted", "weight": 2}, "weight")):
        with pytest.raises(ConfigError, match=match):
            build_run_config({"methods": methods, "fusion": [{"baseline": "msp", "diffguard": "dg", **bad}]})


def test_veto_rule_moves_confident_ood_that_diffguard_finds_id_into_the_band() -> None:
    from diffguard.detectors.fusion import BandFusion, VetoBandFusion

    rng = np.random.default_rng(0)
    b_val, d_val = rng.normal(size=400), rng.normal(size=400)
    band = BandFusion(0.3, 0.9).fit(b_val, d_val)
    veto = VetoBandFusion(0.3, 0.9, veto_q=0.2).fit(b_val, d_val)
    hi, d_cut = veto.report_state()["high_threshold"], veto.report_state()["veto_threshold"]
    assert d_cut == pytest.approx(np.quantile(d_val, 0.2))
    b = np.array([-3.0, 0.0, hi + 1, hi + 1])
    d = np.array([5.0, 0.0, d_cut - 1, d_cut + 1])       # row 2: DiffGuard confidently ID -> vetoed
    assert veto.tiers(b, d).tolist() == [0, 1, 1, 2]
    assert band.tiers(b).tolist() == [0, 1, 2, 2]
    fused = veto.fuse(b, d)
    assert 1 < fused[2] < 2 and fused[3] > 2 and np.allclose(fused[[0, 1, 3]], band.fuse(b, d)[[0, 1, 3]])
    assert veto.needs_diffguard(b).tolist() == [False, True, True, True]
    with pytest.raises(ValueError, match="needs DiffGuard"):
        veto.tiers(b)
    with pytest.raises(ValueError, match="veto_q"):
        VetoBandFusion(veto_q=1.5)


# ----- SplitVetoFusion: the veto by one DiffGuard column, the band ranked by another -----


def _split_data(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cols = {"score": rng.normal(size=300), "dist:gmsd": rng.gamma(2.0, size=300),
            "dist:logits_l1": rng.normal(size=300), "dist:l2": rng.normal(size=300)}
    return rng.normal(size=300), cols


def test_split_veto_with_both_columns_the_score_is_the_veto_rule() -> None:
    from diffguard.detectors.fusion import SplitVetoFusion, VetoBandFusion, diffguard_input

    b_val, val = _split_data(0)
    b, test = _split_data(1)
    for cap in (None, 1.0, 0.95):
        split = SplitVetoFusion(0.3, 0.8, veto_q=0.4, veto_cap_q=cap, veto_by="score", rank_by="score")
        assert split.diffguard_columns == ("score",) and split.takes_columns
        split.fit(b_val, diffguard_input(split, val))
        veto = VetoBandFusion(0.3, 0.8, veto_q=0.4, veto_cap_q=cap).fit(b_val, val["score"])
        assert split.report_state() == veto.report_state()
        assert np.array_equal(split.fuse(b * 2, diffguard_input(split, test)), veto.fuse(b * 2, test["score"]))
        assert np.array_equal(split.tiers(b * 2, test), veto.tiers(b * 2, test["score"]))
        assert np.array_equal(split.needs_diffguard(b * 2), veto.needs_diffguard(b * 2))


def test_veto_cap_keeps_the_baseline_beyond_every_id_val_score() -> None:
    """Above the largest ID-val baseline score (veto-split's default cap) no veto applies and DiffGuard is not
    needed; below it the veto works as before; the veto rule has no cap unless given one."""
    from diffguard.detectors.fusion import SplitVetoFusion, VetoBandFusion

    b_val, val = _split_data(3)
    top = b_val.max()
    b = np.array([top + 5.0, top - 1e-9, b_val.min() - 1.0])   # beyond every ID-val score, just inside, confident ID
    low = {c: np.full(3, -10.0) for c in val}                   # DiffGuard: every column says "unchanged"
    low["dist:gmsd"] = np.zeros(3)
    rule = SplitVetoFusion(0.3, 0.9, veto_q=0.5).fit(b_val, val)
    assert rule.veto_cap_q == 1.0 and rule.report_state()["veto_cap"] == top
    assert list(rule.tiers(b, low)) == [2, 1, 0]               # vetoed only inside the ID-val range
    assert list(rule.needs_diffguard(b)) == [False, True, False]
    fused = rule.fuse(b, low)
    assert fused[0] > 2 and 1 < fused[1] < 2
    uncapped = SplitVetoFusion(0.3, 0.9, veto_q=0.5, veto_cap_q=None).fit(b_val, val)
    assert list(uncapped.tiers(b, low)) == [1, 1, 0] and list(uncapped.needs_diffguard(b)) == [True, True, False]
    veto = VetoBandFusion(0.3, 0.9, veto_q=0.5).fit(b_val, val["score"])
    assert veto.veto_cap_q is None and veto.report_state()["veto_cap"] == np.inf
    # a guard saved before the cap existed has no "veto_cap" in its state: no cap
    state = {k: v for k, v in rule.report_state().items() if k != "veto_cap"}
    assert list(SplitVetoFusion(0.3, 0.9, veto_q=0.5).with_state(state).tiers(b, low)) == [1, 1, 0]
    with pytest.raises(ValueError, match="high_q <= veto_cap_q <= 1"):
        SplitVetoFusion(0.3, 0.9, veto_cap_q=0.5)


def test_split_veto_vetoes_by_one_column_and_ranks_the_band_by_the_other() -> None:
    from diffguard.detectors.fusion import SplitVetoFusion, _robust_scale, _squash

    b_val, val = _split_data(2)
    rule = SplitVetoFusion(0.3, 0.9, veto_q=0.25, veto_cap_q=None, veto_by="gmsd", rank_by="logits_l1")
    assert rule.diffguard_columns == ("dist:gmsd", "dist:logits_l1")
    rule.fit(b_val, val)
    st = rule.report_state()
    # fitted on ID-val only: thresholds of the baseline, the veto quantile of gmsd, the scale of logits_l1
    assert st["low_threshold"] == np.quantile(b_val, 0.3) and st["high_threshold"] == np.quantile(b_val, 0.9)
    assert st["veto_threshold"] == np.quantile(val["dist:gmsd"], 0.25)
    assert (st["diffguard_median"], st["diffguard_scale"]) == _robust_scale(val["dist:logits_l1"])
    lo, hi, t = st["low_threshold"], st["high_threshold"], st["veto_threshold"]
    b = np.array([lo - 1, lo, (lo + hi) / 2, hi + 1, hi + 1, hi + 2])
    gmsd = np.array([9.0, 9.0, 9.0, t, t + 1, t - 1])    # rows 3 and 5 vetoed (at or below t), row 4 not
    logits = np.array([0.0, -5.0, 5.0, 1.0, -9.0, 2.0])
    cols = {"dist:gmsd": gmsd, "dist:logits_l1": logits}
    assert rule.tiers(b, cols).tolist() == [0, 1, 1, 1, 2, 1]
    fused = rule.fuse(b, cols)
    u_rank = _squash(logits, st["diffguard_median"], st["diffguard_scale"])
    u_b = _squash(b, st["baseline_median"], st["baseline_scale"])
    np.testing.assert_array_equal(fused, np.array([0, 1, 1, 1, 2, 1]) + np.where([0, 1, 1, 1, 0, 1], u_rank, u_b))
    # the band (vetoed rows included) is ordered by logits_l1, whatever gmsd says
    assert np.array_equal(np.argsort(fused[[1, 2, 3, 5]]), np.argsort(logits[[1, 2, 3, 5]]))
    assert rule.needs_diffguard(b).tolist() == [False, True, True, True, True, True]
    assert rule.report()["veto_by"] == "gmsd" and rule.report()["rank_by"] == "logits_l1"


def test_split_veto_refuses_bad_parameters_and_missing_columns() -> None:
    from diffguard.detectors.fusion import SplitVetoFusion, create_fusion, diffguard_input
    from diffguard.errors import UserError

    with pytest.raises(ValueError, match="veto_by must be 'score'.*got 'gmds'.*did you mean 'gmsd'"):
        SplitVetoFusion(veto_by="gmds")
    with pytest.raises(ValueError, match="rank_by"):
        SplitVetoFusion(rank_by="dist:gmsd")
    with pytest.raises(ValueError, match="veto_q"):
        SplitVetoFusion(veto_q=-0.1)
    rule = create_fusion("veto-split", low_q=0.2, high_q=0.9, veto_q=0.5, veto_by="l2", rank_by="score")
    assert isinstance(rule, SplitVetoFusion) and rule.diffguard_columns == ("dist:l2", "score")
    b_val, val = _split_data(3)
    with pytest.raises(UserError, match=r"reads DiffGuard's column\(s\) \['dist:l2'\]"):
        diffguard_input(rule, {"score": val["score"]})
    with pytest.raises(TypeError, match="mapping column -> scores"):
        rule.fit(b_val, val["score"])
    with pytest.raises(ValueError, match="lacks DiffGuard column"):
        rule.fit(b_val, {"score": val["score"]})
    rule.fit(b_val, val)
    with pytest.raises(ValueError, match="same samples"):
        rule.fuse(b_val[:3], {"dist:l2": val["dist:l2"][:2], "score": val["score"][:3]})
    with pytest.raises(ValueError, match="needs DiffGuard"):
        rule.tiers(np.array([np.quantile(b_val, 0.95)]))   # above the band, below the cap
    # the other rules read DiffGuard's score only and take it as an array
    assert diffguard_input(BandFusion(), val) is val["score"] and WeightedSumFusion().diffguard_columns == ("score",)


def test_veto_split_fusion_entries_of_a_run_config() -> None:
    from diffguard.detectors.fusion import SplitVetoFusion
    from diffguard.errors import ConfigError
    from diffguard.run.run_config import build_run_config

    methods = [{"name": "msp"}, {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg"}]
    entry = {"baseline": "msp", "diffguard": "dg", "rule": "veto-split", "low_q": 0.85, "high_q": 0.99,
             "veto_q": 0.8}
    (f,) = build_run_config({"methods": methods, "fusion": [entry]}).fusion
    assert f.key == "dg+msp:veto-split" and f.describe() == "q=(0.85, 0.99), veto 0.8 by gmsd, band by logits_l1"
    rule = f.build()
    assert isinstance(rule, SplitVetoFusion) and (rule.veto_by, rule.rank_by, rule.veto_q) == ("gmsd", "logits_l1",
                                                                                                  0.8)
    assert f.params() == {"low_q": 0.85, "high_q": 0.99, "veto_q": 0.8, "veto_by": "gmsd", "rank_by": "logits_l1"}
    with pytest.raises(ConfigError, match="fusion dg\\+msp:veto-split: rank_by must be"):
        build_run_config({"methods": methods, "fusion": [{**entry, "rank_by": "logit_l1"}]})
