"""Mean ± std over seeds: the aggregation on hand-made rows, refusals, and `benchmark --seed` + `seeds` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from diffguard.cli import main
from diffguard.cli.benchmark_cmd import run_seeds, seed_overrides
from diffguard.run.run_config import build_run_config
from diffguard.evaluation.seed_spread import aggregate, check_same_plan, pm, summary_rows
from diffguard.run.store import StoreError
from test_runner import FAST, tiny_config


def _row(key: str, set_name: str, auroc: float, fpr: float = 0.5) -> dict:
    return {"method": key.upper(), "key": key, "set": set_name, "group": set_name, "AUROC": auroc,
            "FPR@95 (OOD-pos, v1.5)": fpr, "FPR@95 (ID-pos, paper)": fpr, "ACC": 0.9}


def test_aggregate_gives_population_mean_and_std() -> None:
    runs = [[_row("a", "near", 0.8, 0.2), _row("a", "all", 0.7)], [_row("a", "near", 0.9, 0.4), _row("a", "all", 0.7)],
            [_row("a", "near", 1.0, 0.3), _row("a", "all", 0.7)]]
    rows = aggregate(runs)
    near = next(r for r in rows if r["set"] == "near")
    assert near["AUROC mean"] == pytest.approx(0.9) and near["AUROC std"] == pytest.approx(np.sqrt(0.02 / 3))
    assert near["FPR@95 (OOD-pos, v1.5) mean"] == pytest.approx(0.3)
    assert near["ACC std"] == 0.0 and near["runs"] == 3 and "AUPR-IN mean" not in near
    assert summary_rows(rows) == [{"method": "A", "AUROC near (%)": pm(0.9, np.sqrt(0.02 / 3)),
                                   "AUROC all (%)": "70.00 ± 0.00", "FPR@95 (OOD-pos, v1.5) all (%)": "50.00 ± 0.00",
                                   "FPR@95 (ID-pos, paper) all (%)": "50.00 ± 0.00"}]


def test_aggregate_refuses_one_run_and_different_rows() -> None:
    with pytest.raises(ValueError, match="at least two runs"):
        aggregate([[_row("a", "all", 0.7)]])
    with pytest.raises(ValueError, match="same \\(method, set\\) rows.*Finish both runs"):
        aggregate([[_row("a", "all", 0.7)], [_row("b", "all", 0.7)]], ["x", "y"])


def test_check_same_plan_names_the_difference() -> None:
    base = {"benchmark": "fmnist6", "limit": 10, "methods": [{"name": "msp"}]}
    check_same_plan([base, dict(base)], ["a", "b"])
    with pytest.raises(ValueError, match="b differs from a in \\['limit'\\]"):
        check_same_plan([base, {**base, "limit": 20}], ["a", "b"])
    with pytest.raises(ValueError, match="methods"):
        check_same_plan([base, {**base, "methods": [{"name": "knn"}]}], ["a", "b"])


def test_seed_overrides_touch_only_seeded_methods() -> None:
    cfg = build_run_config({"benchmark": "fmnist6", "methods": [
        {"name": "msp"}, {"name": "mc_dropout"}, {"name": "diffnb"},
        {"name": "dg", "kind": "diffguard", "preset": "fmnist6-clean-grad"}]})
    assert seed_overrides(cfg, 0) == []  # the config's own seeds: the same folder resumes
    over = seed_overrides(cfg, 3)
    assert over == ["mc_dropout.seed=3", "diffnb.seed=3", "dg.seed=3"]
    seeded = run_seeds(build_run_config({"benchmark": "fmnist6", "methods": [
        {"name": "msp"}, {"name": "mc_dropout"}, {"name": "diffnb"},
        {"name": "dg", "kind": "diffguard", "preset": "fmnist6-clean-grad"}]}, over))
    assert seeded == {"limit_seed": 0, "msp": None, "mc_dropout": 3, "diffnb": 3, "dg": 3}


def test_benchmark_seed_then_seeds_command(tmp_path: Path, tiny_models: tuple[Path, Path], fake_fmnist_root: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config(tiny_models, limit=4, val_limit=4, fusion=[])
    cfg["methods"] = [{"name": "msp"}, {"name": "dg", "kind": "diffguard", "preset": "fmnist6-clean-grad",
                                         "overrides": FAST}]
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    for seed in (0, 1):
        assert main(["benchmark", str(cfg_file), "--out", str(tmp_path / f"s{seed}"), "--data-root",
                     str(fake_fmnist_root), "--no-progress", "--seed", str(seed)]) == 0
    s0, s1 = (json.loads((tmp_path / f"s{s}" / "manifest.json").read_text()) for s in (0, 1))
    assert s0["seeds"]["dg"] == 0 and s1["seeds"]["dg"] == 1 and s1["seeds"]["limit_seed"] == 0
    csv0, csv1 = ((tmp_path / f"s{s}" / "scores.csv").read_text().splitlines() for s in (0, 1))
    assert [line.split(",")[:6] for line in csv0] == [line.split(",")[:6] for line in csv1]  # same rows, same MSP
    assert csv0 != csv1  # other cutouts: other Clean-Grad scores
    capsys.readouterr()
    assert main(["seeds", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "agg")]) == 0
    printed = capsys.readouterr().out
    assert "± " in printed and "over 2 runs" in printed
    rows = json.loads((tmp_path / "agg" / "seeds.json").read_text())
    m0, m1 = (json.loads((tmp_path / f"s{s}" / "metrics.json").read_text()) for s in (0, 1))
    assert any("AUROC mean" in row for row in rows)
    for row in [r for r in rows if "AUROC mean" in r]:  # csid rows carry flag rates, not AUROC
        a = next(r for r in m0 if (r["key"], r["set"]) == (row["key"], row["set"]))
        b = next(r for r in m1 if (r["key"], r["set"]) == (row["key"], row["set"]))
        assert row["AUROC mean"] == pytest.approx((a["AUROC"] + b["AUROC"]) / 2)
        assert row["AUROC std"] == pytest.approx(abs(a["AUROC"] - b["AUROC"]) / 2)
        if row["key"] == "msp":
            assert row["AUROC std"] == 0.0
    for name in ("seeds.csv", "seeds.md", "seeds-summary.md"):
        assert (tmp_path / "agg" / name).is_file()


def test_seeds_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seeds", str(tmp_path / "nope"), str(tmp_path / "nope2")]) == 2
    assert "has no run_config.json" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run_config.json").write_text("{}")
    (tmp_path / "bad" / "metrics.json").write_text("[1, 2")
    with pytest.raises(StoreError, match="unreadable metrics"):
        from diffguard.evaluation.seed_spread import read_run

        read_run(tmp_path / "bad")
