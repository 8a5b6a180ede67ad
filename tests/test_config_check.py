"""A run config is checked whole before anything runs (issue 22, point 5): one test per kind of mistake, every
mistake reported at once, no results folder left by a refused config, and the benchmarks that used to die in
evaluation (sets named near / far / all; ID and csid sets only) running end to end with tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from diffguard.cli import main
from diffguard.run.config_check import RoleWarning, checked_run_config
from diffguard.run.run_config import RunConfigError, build_run_config
from diffguard.run.runner import Runner
from user_data import make_shapes

METHODS = [{"name": "msp"}, {"name": "knn", "params": {"k": 3}},
           {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg"}]
TINY_CLASSIFIER = {"type": "module", "class": "diffguard.nets.resnet:SmallResNet", "weights": None,
                   "kwargs": {"num_classes": 3, "in_channels": 3, "width": 4}}


def _config(**extra: Any) -> dict[str, Any]:
    """A valid fmnist6 config (shipped models, nothing loaded by the check) with ``extra`` keys replaced."""
    return {"benchmark": "fmnist6", "methods": METHODS, "fusion": [{"baseline": "knn", "diffguard": "dg"}], **extra}


def _problems(data: dict[str, Any], overrides: list[str] = (), requested: list[str] | None = None) -> list[str]:
    with pytest.raises(RunConfigError) as info:
        checked_run_config(data, overrides, requested)
    message = str(info.value)
    assert message.count("\n  - ") == len(info.value.problems)  # one line per problem
    return info.value.problems


def _one(problems: list[str], *parts: str) -> str:
    """The one problem line holding every part."""
    found = [p for p in problems if all(part in p for part in parts)]
    assert len(found) == 1, (parts, problems)
    return found[0]


def test_a_valid_config_passes_and_gives_its_benchmark() -> None:
    cfg, spec = checked_run_config(_config(), ["limit=10"], ["msp"])
    assert spec.name == "fmnist6" and cfg.limit == 10 and [f.key for f in cfg.fusion] == ["dg+knn"]


def test_unknown_method_detector() -> None:
    problems = _problems(_config(methods=[*METHODS, {"name": "mps-run", "method": "mps"}]))
    assert "Did you mean 'msp'" in _one(problems, "method 'mps-run'", "unknown detector 'mps'")


def test_unknown_preset() -> None:
    methods = [*METHODS[:2], {"name": "dg", "method": "diffguard", "preset": "fmnist6-cgf"}]
    assert "Did you mean 'fmnist6-cfg'" in _one(_problems(_config(methods=methods)), "method 'dg'",
                                                "unknown preset 'fmnist6-cgf'")


def test_bad_override_keys_and_parameters() -> None:
    methods = [*METHODS[:2], {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg",
                              "overrides": ["guidance.scal=5", "refrence=unguided"], "params": {"dist_weights": "x"}}]
    problems = _problems(_config(methods=methods))
    _one(problems, "method 'dg'", "unknown DiffGuard option(s) ['dist_weights']")
    methods[2]["params"] = {}
    problems = _problems(_config(methods=methods), ["knn.kk=3", "dg.label_mode=orcale"])
    _one(problems, "method 'dg'", "guidance.scal=5", "has no field 'scal'")
    assert "Did you mean 'reference'" in _one(problems, "method 'dg'", "unknown DiffGuard setting 'refrence'")
    _one(problems, "method 'dg'", "label_mode must be one of", "'orcale'")
    assert "Did you mean 'k'" in _one(problems, "method 'knn'", "unknown knn parameter 'kk'")
    assert "Did you mean limit" in _one(_problems(_config(), ["limt=3"]), "override 'limt=3'")


def test_unknown_fusion_part_is_refused_not_dropped() -> None:
    problems = _problems(_config(fusion=[{"baseline": "knm", "diffguard": "dg"},
                                         {"baseline": "msp", "diffguard": "dg-cfg"}]))
    assert "Did you mean 'knn'" in _one(problems, "fusion dg+knm", "baseline", "'knm'")
    _one(problems, "fusion dg-cfg+msp", "diffguard", "'dg-cfg'")
    assert len(problems) == 2


def test_two_fusion_entries_with_one_key_are_refused() -> None:
    band = {"baseline": "knn", "diffguard": "dg"}
    problems = _problems(_config(fusion=[band, {**band, "low_q": 0.3}, {**band, "rule": "weighted"}]))
    _one(problems, "fusion dg+knn", "2 entries with this key")
    assert len(problems) == 1


def test_unknown_fusion_rule() -> None:
    problems = _problems(_config(fusion=[{"baseline": "knn", "diffguard": "dg", "rule": "bnad"}]))
    _one(problems, "fusion dg+knn", "unknown rule 'bnad'", "band")


def test_veto_split_fusion_reads_distances_its_diffguard_method_computes() -> None:
    split = {"baseline": "knn", "diffguard": "dg", "rule": "veto-split", "veto_by": "gmsd", "rank_by": "score"}
    cfg, _ = checked_run_config(_config(fusion=[split]))  # fmnist6-cfg computes gmsd
    assert [f.key for f in cfg.fusion] == ["dg+knn:veto-split"]
    narrow = [*METHODS[:2], {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg",
                             "overrides": ["distances=('l2',)"]}]
    problems = _problems(_config(methods=narrow, fusion=[split, {**split, "diffguard": "msp", "baseline": "knn"},
                                                         {**split, "rank_by": "logit_l1"}]))
    _one(problems, "fusion dg+knn:veto-split", "distance 'gmsd'", "does not compute", "['l2']",
         "distances=('l2', 'gmsd')")
    _one(problems, "fusion msp+knn:veto-split", "'msp' is not a DiffGuard method")
    assert "did you mean 'logits_l1'" in _one(problems, "fusion dg+knn", "rank_by must be", "'logit_l1'")
    assert len(problems) == 3


def test_unknown_set_name() -> None:
    problems = _problems(_config(sets=["test", "near-fmnsit"]))
    assert "Did you mean 'near-fmnist'" in _one(problems, "sets:", "'near-fmnsit'")


def test_unknown_distance() -> None:
    methods = [*METHODS[:2], {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg",
                              "overrides": ["distances=('l2','ssmi')", "score_distance=gmsd+l3"]}]
    problems = _problems(_config(methods=methods))
    assert "Did you mean 'ssim'" in _one(problems, "method 'dg'", "distances:", "'ssmi'")
    _one(problems, "method 'dg'", "score_distance:", "'l3'")


def test_model_spec_classes_channels_and_size_against_the_benchmark(tmp_path: Path) -> None:
    clf, diff = tmp_path / "clf", tmp_path / "diff"  # only the small JSON files the check reads; no weights
    clf.mkdir()
    diff.mkdir()
    (clf / "config.json").write_text(json.dumps({"arch": "SmallResNet", "num_classes": 3, "in_channels": 3}))
    (diff / "diffguard.json").write_text(json.dumps({"num_classes": 6, "null_label": 6, "channels": 1,
                                                     "resolution": 32}))
    problems = _problems(_config(classifier=str(clf), diffusion=str(diff)))
    _one(problems, "classifier", "3 classes", "benchmark 'fmnist6' has 6")
    _one(problems, "classifier", "3-channel images", "1-channel images")
    _one(problems, "diffusion model", "32-pixel images", "28-pixel images")
    assert len(problems) == 3
    problems = _problems(_config(classifier=TINY_CLASSIFIER, diffusion={"type": "adm", "checkpoint": "/no/adm.pt"}))
    _one(problems, "classifier", "3 classes", "its module spec")
    _one(problems, "diffusion", "/no/adm.pt does not exist")
    # without a method that needs it, the diffusion model is not checked at all
    checked_run_config(_config(methods=METHODS[:2], fusion=[], diffusion=str(diff)))


def test_every_mistake_is_reported_at_once() -> None:
    methods = [{"name": "msp"}, {"name": "mps-run", "method": "mps"}, {"name": "knn", "params": {"kk": 3}},
               {"name": "dg", "method": "diffguard", "preset": "fmnist6-cgf"}]
    problems = _problems(_config(methods=methods, sets=["test", "near-fmnsit"], limit=0,
                                 fusion=[{"baseline": "knm", "diffguard": "dg"},
                                         {"baseline": "msp", "diffguard": "dg", "rule": "max"}]),
                         ["colour=red"], requested=["msp", "mxp"])
    for parts in (("unknown detector 'mps'",), ("unknown knn parameter 'kk'",), ("unknown preset 'fmnist6-cgf'",),
                  ("'near-fmnsit'",), ("limit:",), ("fusion dg+knm",), ("unknown rule 'max'",), ("'colour=red'",),
                  ("--methods", "'mxp'")):
        _one(problems, *parts)
    assert len(problems) == 9


def test_a_broken_benchmark_definition_is_reported_with_the_rest(tmp_path: Path) -> None:
    bench = yaml.safe_load(make_shapes(tmp_path / "bench").read_text())
    bench["sets"][3]["role"] = "ood"
    bench["sets"][4]["name"] = "set:x"
    bench["size"] = -1
    (tmp_path / "bench" / "broken.yaml").write_text(yaml.safe_dump(bench))
    problems = _problems({"benchmark": str(tmp_path / "bench" / "broken.yaml"), "methods": [{"name": "mps"}]})
    _one(problems, "set 'dim'", "role 'ood'")
    _one(problems, "set 'set:x'", "may not start with 'set:'")
    _one(problems, "'size' must be a positive integer")
    _one(problems, "unknown detector 'mps'")


def test_roles_a_run_needs_and_fits_without_train(tmp_path: Path) -> None:
    bench = yaml.safe_load(make_shapes(tmp_path / "bench").read_text())
    bench["sets"] = [s for s in bench["sets"] if s["role"] not in ("train", "val")]
    path = tmp_path / "bench" / "no-val.yaml"
    path.write_text(yaml.safe_dump(bench))
    problems = _problems({"benchmark": str(path), "classifier": TINY_CLASSIFIER, "methods": [{"name": "knn"}]})
    _one(problems, "no set with role 'val'")
    _one(problems, "['knn'] fit on ID-train data", "no set with role 'train'")


def test_a_refused_config_leaves_no_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(fusion=[{"baseline": "knm", "diffguard": "dg"}], sets=["tset"])))
    out = tmp_path / "results" / "run"
    assert main(["benchmark", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "2 problems; nothing was computed or written" in err and "'knm'" in err and "'tset'" in err
    assert not (tmp_path / "results").exists()
    with pytest.raises(RunConfigError, match="'knm'"):  # the runner itself refuses too, before any folder
        Runner(build_run_config(_config(fusion=[{"baseline": "knm", "diffguard": "dg"}])), out, progress=False)
    assert not (tmp_path / "results").exists()


# -- end to end, tiny models (baselines only) ----------------------------------------------------------------------


def _run(tmp_path: Path, bench: dict[str, Any], capsys: pytest.CaptureFixture[str], **extra: Any) -> Path:
    """Run msp and knn (and their fusion) on a benchmark definition through the CLI; returns the results folder."""
    path = tmp_path / "bench" / f"{bench['name']}.yaml"
    path.write_text(yaml.safe_dump(bench))
    config = {"benchmark": str(path), "classifier": TINY_CLASSIFIER, "batch_size": 8, "gallery": 1,
              "methods": [{"name": "msp"}, {"name": "knn", "params": {"k": 3}}],
              "fusion": [{"baseline": "msp", "diffguard": "knn", "rule": "weighted"}], **extra}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "results"
    assert main(["benchmark", str(tmp_path / "run.yaml"), "--out", str(out), "--no-progress", "--threads", "1",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    return out


def test_sets_named_near_far_and_all_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = yaml.safe_load(make_shapes(tmp_path / "bench").read_text())
    bench["name"] = "named-like-groups"
    renamed = {"lines": ("far", "near"), "noise": ("near", "far"), "val-ood": ("all", "far")}  # old: (new, role)
    for s in bench["sets"]:
        if s["name"] in renamed:
            s["name"], s["role"] = renamed[s["name"]]
    out = _run(tmp_path, bench, capsys)
    rows = {(r["key"], r["set"]): r for r in json.loads((out / "metrics.json").read_text())}
    for key in ("msp", "knn", "knn+msp:weighted"):
        assert rows[key, "set:far"]["group"] == "near" and rows[key, "set:near"]["group"] == "far"
        assert rows[key, "set:all"]["group"] == "far"
        for group in ("near", "far", "all"):  # the group rows keep their names
            assert rows[key, group]["group"] == group
        assert rows[key, "all"]["AUROC"] == pytest.approx(
            (rows[key, "set:far"]["AUROC"] + rows[key, "set:near"]["AUROC"] + rows[key, "set:all"]["AUROC"]) / 3)
    assert "| set:near |" in (out / "metrics.md").read_text()
    assert main(["report", str(out)]) == 0  # the folder reads back


def test_a_benchmark_with_id_and_csid_sets_only_reports_csid_rows(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bench = yaml.safe_load(make_shapes(tmp_path / "bench").read_text())
    bench["name"] = "false-alarms"
    bench["sets"] = [s for s in bench["sets"] if s["role"] in ("train", "val", "id", "csid")]
    out = _run(tmp_path, bench, capsys)
    rows = json.loads((out / "metrics.json").read_text())
    assert {(r["key"], r["set"]) for r in rows} == {("msp", "dim"), ("knn", "dim"), ("knn+msp:weighted", "dim")}
    assert all(r["group"] == "csid" and "AUROC" not in r and 0 <= r["csid flagged"] <= 1 for r in rows)
    thresholds = json.loads((out / "thresholds.json").read_text())["thresholds"]
    assert set(thresholds) == {"msp", "knn", "knn+msp:weighted"}
    assert "csid flagged (test)" in (out / "report.html").read_text()


def test_val_csid_is_validation_and_a_csid_set_named_val_is_test_data(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Roles, not names: val-rotated (role val_csid) is validation data (val_limit rows, the summary's csid flagged
    (val)); val-blurred (role csid) is test data (limit rows, csid flagged (test)) and the run warns about its name.
    With one val_ood set, metrics.md lists it once (no val_ood mean row repeating it)."""
    bench = yaml.safe_load(make_shapes(tmp_path / "bench").read_text())
    bench["name"] = "roles-not-names"
    bench["sets"] += [{"name": "val-rotated", "role": "val_csid", "folder": "data/dim"},
                      {"name": "val-blurred", "role": "csid", "folder": "data/dim"}]
    with pytest.warns(RoleWarning, match="'val-blurred' has role 'csid' and is treated as TEST data") as got:
        out = _run(tmp_path, bench, capsys, limit=5, val_limit=4)
    assert len(got) == 1 and "val-rotated" not in str(got[0].message)
    rows = {(r["key"], r["set"]): r for r in json.loads((out / "metrics.json").read_text())}
    for key in ("msp", "knn", "knn+msp:weighted"):
        assert rows[key, "val-rotated"]["group"] == rows[key, "val-blurred"]["group"] == "csid"
        assert rows[key, "val-ood"]["group"] == "val_ood" and (key, "val_ood") not in rows
    with pytest.warns(RoleWarning):  # the folder's run config rebuilds the same plan, and warns again
        runner = Runner(build_run_config(json.loads((out / "run_config.json").read_text())), out, progress=False)
    assert len(runner.plan["val-rotated"]) == 4 and len(runner.plan["val-blurred"]) == 5
    md = (out / "metrics.md").read_text()
    assert md.count("| val-ood |") == md.count("| val-rotated |") == md.count("| val-blurred |") == 3
    html = (out / "report.html").read_text()
    assert "csid flagged (val)" in html and "csid flagged (test)" in html and "AUROC val_ood" in html
