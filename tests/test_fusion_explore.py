"""benchmarks/fusion_explore.py re-implements the veto-split rule on its own arrays (a vetoer column and a ranker
column of DiffGuard's stored scores): it must fuse exactly as the library's SplitVetoFusion does."""

from __future__ import annotations

import numpy as np
import pytest

from diffguard.detectors.fusion import SplitVetoFusion
from script_modules import load_script


@pytest.fixture(scope="module")
def explore():
    return load_script("benchmarks/fusion_explore.py")


def _features(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    return {"vim": rng.normal(shift, 1, n), "dg": rng.normal(shift, 1, n), "gmsd": rng.gamma(2, 1 + shift, n),
            "logits_l1": rng.normal(shift, 2, n)}


@pytest.mark.parametrize(("vetoer", "ranker", "cap"), [("gmsd", "logits_l1", 1.0), ("dg", "logits_l1", 0.99),
                                                       ("logits_l1", "gmsd", 1.0)])
def test_explorer_veto_split_matches_split_veto_fusion(explore, vetoer: str, ranker: str, cap: float) -> None:
    rng = np.random.default_rng(3)
    train = {"val": _features(rng, 400, 0.0)}
    parts = [_features(rng, 300, shift) for shift in (0.0, 0.5, 2.0)]  # ID-like, mildly shifted, far
    test = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    params = {"low_q": 0.6, "high_q": 0.95, "veto_q": 0.7}
    scorer = explore.veto("vim", vetoer, ranker, cap=cap).fit(train, params)
    column = {"dg": "score"}.get
    rule = SplitVetoFusion(**params, veto_cap_q=cap, veto_by=column(vetoer, vetoer), rank_by=column(ranker, ranker))
    as_columns = lambda f: {("score" if k == "dg" else f"dist:{k}"): v for k, v in f.items() if k != "vim"}  # noqa: E731
    rule.fit(train["val"]["vim"], as_columns(train["val"]))
    got = scorer(test)
    want = rule.fuse(test["vim"], as_columns(test))
    assert np.array_equal(rule.tiers(test["vim"], as_columns(test)), np.floor(got).astype(int))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert {0, 1, 2} <= set(np.floor(got).astype(int).tolist())  # every tier is exercised
