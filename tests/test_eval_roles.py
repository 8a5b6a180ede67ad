"""Validation and covariate-shift roles in a run: row limits, the groups each set joins, and the csid flag rate and
OOD-validation metrics computed from hand-made scores."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from diffguard.bench.definitions import BenchmarkSpec, SetSpec
from diffguard.evaluation import evaluate_run as ev_mod
from diffguard.evaluation.evaluate_run import evaluate, ood_groups, summary_rows, val_csid_rows, write_outputs
from diffguard.bench.definitions import ROLES
from diffguard.run.config_check import RoleWarning, role_warnings
from diffguard.run.plan import is_validation
from diffguard.run.run_config import build_run_config
from diffguard.run.runner import Runner
from test_eval_data import make_imglist_benchmark


def _spec(root: Path) -> BenchmarkSpec:
    """The tiny image-list benchmark (5 images per set) plus two OOD-validation sets and two csid sets, which reuse
    its lists (the OOD ones read with label -1)."""
    base = make_imglist_benchmark(root, n=5, size=28, channels=1, num_classes=6)
    extra = (SetSpec("valood-a", "val_ood", "benchmark_imglist/tiny/far1.txt", "images_classic"),
             SetSpec("valood-b", "val_ood", "benchmark_imglist/tiny/near1.txt", "images_classic"),
             SetSpec("val-csid", "val_csid", "benchmark_imglist/tiny/val.txt", "images_classic"),
             SetSpec("test-csid", "csid", "benchmark_imglist/tiny/test.txt", "images_classic"))
    return dataclasses.replace(base, sets=base.sets + extra)


def _runner(tmp_path: Path, **extra: object) -> Runner:
    cfg = build_run_config({"benchmark": "tiny", "data_root": str(tmp_path / "data"), "limit": None,
                            "val_limit": None, "methods": [{"name": "msp"}, {"name": "dg", "kind": "diffguard",
                                                                             "preset": "fmnist6-cfg"}],
                            "fusion": [{"baseline": "msp", "diffguard": "dg"}], **extra})
    return Runner(cfg, tmp_path / "out", progress=False, spec=_spec(tmp_path / "data"))


# Hand-made scores (5 rows per set, in plan order). ID-val 0..4: the 95 %-TPR threshold is its 95th percentile,
# 3 + 0.8 * (4 - 3) = 3.8; a score flags when strictly above it.
MSP = {"val": [0, 1, 2, 3, 4], "test": [0, 1, 2, 3, 4], "near1": [5, 6, 7, 8, 9], "far1": [10, 11, 12, 13, 14],
       "valood-a": [10, 11, 12, 13, 14],  # AUROC against ID-val 1
       "valood-b": [0, 1, 2, 3, 4],  # = ID-val: AUROC 0.5, FPR@95 (paper) 1
       "val-csid": [4, 0, 0, 0, 0],  # 1 of 5 above 3.8
       "test-csid": [0, 3.8, 3.9, 5, 1]}  # 3.9 and 5 above 3.8 (3.8 itself is not): 2 of 5
DG = {name: list(np.asarray(v, float)[::-1] * 0.5 + 1) for name, v in MSP.items()}


def _fill(runner: Runner) -> None:
    """The classifier pass (labels; predictions right except one test-csid row) and both methods' scores."""
    from diffguard.run.store import ResultStore

    with ResultStore(runner.out / "results.sqlite", runner.manifest) as store:
        for name, src in runner.sources.items():
            rows = runner.plan[name]
            ids, labels = src.ids[rows].numpy(), src.labels[rows].numpy()
            preds = np.where(labels >= 0, labels, 0)
            if name == "test-csid":
                preds[0] = (preds[0] + 1) % 6
            store.write_batch("classifier", name, 0, ids, labels=labels, predictions=preds,
                              logits=np.zeros((len(ids), 6)), features=np.zeros((len(ids), 2)))
            if name != "train":
                for method, scores in (("msp", MSP), ("dg", DG)):
                    store.write_batch(method, name, 0, ids, {"score": np.asarray(scores[name], float)}, seconds=1.0)


def test_row_plan_limits_validation_sets_by_val_limit(tmp_path: Path) -> None:
    runner = _runner(tmp_path, limit=3, val_limit=2, train_limit=4)
    sizes = {n: len(r) for n, r in runner.plan.items()}
    assert sizes == {"train": 4, "val": 2, "test": 3, "near1": 3, "far1": 3, "valood-a": 2, "valood-b": 2,
                     "val-csid": 2, "test-csid": 3}
    assert runner.eval_sets() == [n for n in sizes if n != "train"]  # every set but train is scored
    assert [r for r in ROLES if is_validation(r)] == ["val", "val_ood", "val_csid"]  # the role alone decides


def test_a_csid_set_named_val_is_test_data_and_warned_about(tmp_path: Path) -> None:
    """The old name rule is gone: a csid set called val-blurred gets the test ``limit``, a test csid row and a
    RoleWarning telling its author to give it role val_csid."""
    spec = _spec(tmp_path / "data")
    spec = dataclasses.replace(spec, sets=(*spec.sets, SetSpec("val-blurred", "csid", "benchmark_imglist/tiny/val.txt",
                                                               "images_classic")))
    cfg = build_run_config({"benchmark": "tiny", "data_root": str(tmp_path / "data"), "limit": 3, "val_limit": 2,
                            "methods": [{"name": "msp"}]})
    with pytest.warns(RoleWarning, match=r"^set 'val-blurred' has role 'csid' and is treated as TEST data.*"
                                         r"give it 'role: val_csid'$") as got:
        runner = Runner(cfg, tmp_path / "out", progress=False, spec=spec)
    assert len(got) == 1 and role_warnings(_spec(tmp_path / "data")) == []
    assert len(runner.plan["val-blurred"]) == 3 and len(runner.plan["val-csid"]) == 2
    assert val_csid_rows(runner) == ["val-csid"]


def test_roles_join_the_right_groups_and_csid_flag_rate(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    assert ev_mod.test_sets(runner) == ["test", "near1", "far1"]
    assert ood_groups(runner) == {"near": ["near1"], "far": ["far1"], "all": ["near1", "far1"]}
    _fill(runner)
    from diffguard.run.store import ResultStore

    with ResultStore(runner.out / "results.sqlite", runner.manifest) as store:
        ev = evaluate(runner, store)
        write_outputs(runner, store, ev, {"machine": "test"})
    assert ev.complete == ["msp", "dg"] and not ev.incomplete
    assert set(ev.table.set_names.tolist()) == {"test", "near1", "far1"}  # scores.csv: the test sets only
    rows = {(r["key"], r["set"]): r for r in ev.rows}
    # the OOD test groups see only near1 and far1 (valood-b would pull "all" down to 0.83)
    assert rows["msp", "all"]["AUROC"] == 1.0 and rows["msp", "all"]["ACC"] == 1.0
    # OOD validation: ID-val against each val_ood set, and their mean
    assert rows["msp", "valood-a"]["group"] == rows["msp", "val_ood"]["group"] == "val_ood"
    assert rows["msp", "valood-a"]["AUROC"] == 1.0 and rows["msp", "valood-b"]["AUROC"] == 0.5
    assert rows["msp", "val_ood"]["AUROC"] == 0.75
    assert rows["msp", "val_ood"]["FPR@95 (ID-pos, paper)"] == pytest.approx(0.5)  # mean of 0 and 1
    # csid: flagged above the threshold of thresholds.json; ACC of the classifier on the set
    assert ev.thresholds["msp"] == pytest.approx(3.8)
    assert rows["msp", "test-csid"]["csid flagged"] == pytest.approx(0.4)
    assert rows["msp", "val-csid"]["csid flagged"] == pytest.approx(0.2)
    assert rows["msp", "test-csid"]["ACC"] == pytest.approx(0.8) and rows["msp", "val-csid"]["ACC"] == 1.0
    assert rows["msp", "test-csid"]["group"] == "csid" and "AUROC" not in rows["msp", "test-csid"]
    # dg = 1 + 0.5 * (msp reversed): threshold 1 + 0.5 * 3.8 = 2.9 on ID-val [3, 2.5, 2, 1.5, 1]
    assert ev.thresholds["dg"] == pytest.approx(2.9)
    assert rows["dg", "test-csid"]["csid flagged"] == pytest.approx(0.4)  # [1.5, 3.5, 2.95, 2.9, 1]: 3.5, 2.95
    # the fusion gets the same rows, at the threshold of its fused ID-val scores
    from diffguard.detectors.fusion import BandFusion

    fuse = BandFusion(0.5, 0.99).fit(np.asarray(MSP["val"], float), np.asarray(DG["val"], float))
    thr = float(np.quantile(fuse.fuse(np.asarray(MSP["val"], float), np.asarray(DG["val"], float)), 0.95))
    fused = fuse.fuse(np.asarray(MSP["test-csid"], float), np.asarray(DG["test-csid"], float))
    assert ev.thresholds["dg+msp"] == pytest.approx(thr)
    assert rows["dg+msp", "test-csid"]["csid flagged"] == pytest.approx(float(np.mean(fused > thr)))
    assert {("dg+msp", s) for s in ("valood-a", "valood-b", "val_ood", "val-csid")} <= set(rows)
    # the summary: one row per method with the validation AUROC and both csid flag rates
    summary = {r["method"]: r for r in summary_rows(runner, ev)}
    msp = summary[runner.cfg.method("msp").title]
    assert msp["AUROC val_ood"] == 0.75 and msp["csid flagged (test)"] == pytest.approx(0.4)
    assert msp["csid flagged (val)"] == pytest.approx(0.2)
    assert len(summary) == 3 and all("csid flagged (test)" in r for r in summary.values())
    # the files: metrics.json holds the new rows, thresholds.json the fusion's threshold too
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {r["group"] for r in saved} == {"near", "far", "all", "val_ood", "csid"}
    assert json.loads((tmp_path / "out" / "thresholds.json").read_text())["thresholds"]["dg+msp"] == pytest.approx(thr)
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert "csid flagged ↓" in md and "| 40.00 |" in md  # a share, shown in percent


def test_missing_validation_scores_make_a_method_incomplete(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    _fill(runner)
    from diffguard.run.store import ResultStore

    with ResultStore(runner.out / "results.sqlite", runner.manifest) as store:
        store.db.execute("DELETE FROM scores WHERE method = 'dg' AND set_name = 'valood-b'")
        store.db.commit()
        ev = evaluate(runner, store)
    assert ev.complete == ["msp"] and ev.incomplete == {"dg": 5}
    assert not any(r["key"].startswith("dg") for r in ev.rows)


def test_metrics_md_lists_each_validation_set_once(tmp_path: Path) -> None:
    """With one OOD-validation set there is no val_ood mean row (it would repeat the set's row); the summary's
    AUROC val_ood is that set's AUROC. Each val_ood and val_csid set has one row per method in metrics.md."""
    spec = _spec(tmp_path / "data")
    spec = dataclasses.replace(spec, sets=tuple(s for s in spec.sets if s.name != "valood-b"))
    cfg = build_run_config({"benchmark": "tiny", "data_root": str(tmp_path / "data"), "limit": None,
                            "val_limit": None, "methods": [{"name": "msp"}]})
    runner = Runner(cfg, tmp_path / "out", progress=False, spec=spec)
    _fill(runner)
    from diffguard.run.store import ResultStore

    with ResultStore(runner.out / "results.sqlite", runner.manifest) as store:
        ev = evaluate(runner, store)
        write_outputs(runner, store, ev, {"machine": "test"})
    md = (tmp_path / "out" / "metrics.md").read_text().splitlines()
    val_lines = [line for line in md if "| val_ood |" in line or "val-csid" in line]
    assert [line.split(" | ")[2] for line in val_lines] == ["valood-a", "val-csid"]
    assert not any(line.startswith("| msp | msp | val_ood |") for line in md)
    (summary,) = summary_rows(runner, ev)
    assert summary["AUROC val_ood"] == 1.0 and summary["csid flagged (val)"] == pytest.approx(0.2)
    assert summary["csid flagged (test)"] == pytest.approx(0.4)


def test_a_veto_split_fusion_reads_the_stored_distance_columns(tmp_path: Path) -> None:
    """The veto-split rule is fitted on ID-val with DiffGuard's stored ``dist:gmsd`` (veto) and ``dist:logits_l1``
    (band ranking) columns, read for the same rows as the scores, and evaluated like any fusion."""
    from diffguard.detectors.fusion import SplitVetoFusion
    from diffguard.evaluation.ood_metrics import compute_metrics
    from diffguard.run.store import ResultStore

    split = {"baseline": "msp", "diffguard": "dg", "rule": "veto-split", "low_q": 0.2, "high_q": 0.6, "veto_q": 0.5,
             "veto_by": "gmsd", "rank_by": "logits_l1"}
    runner = _runner(tmp_path, fusion=[split])
    _fill(runner)
    gmsd = {n: np.asarray(v, float) * 0.1 + np.arange(5) for n, v in MSP.items()}
    logits = {n: np.cos(np.asarray(v, float) + np.arange(5)) for n, v in MSP.items()}
    with ResultStore(runner.out / "results.sqlite", runner.manifest) as store:
        for name in MSP:
            ids = runner.sources[name].ids[runner.plan[name]].numpy()
            store.write_batch("dg", name, 0, ids, {"score": np.asarray(DG[name], float), "dist:gmsd": gmsd[name],
                                                   "dist:logits_l1": logits[name]}, seconds=1.0)
        ev = evaluate(runner, store)
    key = "dg+msp:veto-split"
    cols = {n: {"dist:gmsd": gmsd[n], "dist:logits_l1": logits[n]} for n in MSP}
    msp = {n: np.asarray(v, float) for n, v in MSP.items()}
    rule = SplitVetoFusion(0.2, 0.6, veto_q=0.5, veto_by="gmsd", rank_by="logits_l1").fit(msp["val"], cols["val"])
    fused = {n: rule.fuse(msp[n], cols[n]) for n in MSP}
    thr = float(np.quantile(fused["val"], 0.95))
    rows = {(r["key"], r["set"]): r for r in ev.rows}
    assert ev.thresholds[key] == pytest.approx(thr)
    assert rows[key, "test-csid"]["csid flagged"] == pytest.approx(float(np.mean(fused["test-csid"] > thr)))
    assert rows[key, "near1"]["AUROC"] == pytest.approx(compute_metrics(fused["test"], fused["near1"])["AUROC"])
    assert rows[key, "valood-a"]["AUROC"] == pytest.approx(compute_metrics(fused["val"], fused["valood-a"])["AUROC"])
    info = next(i for i in ev.fusion if i["veto_by"] == "gmsd")
    assert info["rank_by"] == "logits_l1" and info["veto_threshold"] == pytest.approx(np.quantile(gmsd["val"], 0.5))
