"""The benchmark runner end to end on tiny models: outputs, resume after kill -9, refusal of other configs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from diffguard.data.fmnist6 import CORE_SET_NAMES
from diffguard.run.run_config import build_run_config
from diffguard.evaluation.evaluate_run import evaluate, write_outputs
from diffguard.run.runner import Runner, select_rows
from diffguard.run.store import StoreError
from test_eval_data import make_imglist_benchmark

FAST = ["inversion.steps=6", "inversion.cap=4"]


def tiny_config(tiny_models: tuple[Path, Path], **extra: object) -> dict:
    clf, diff = tiny_models
    # sets: fmnist6's core sets, as before the per-kind csid sets <val|test>-csid-<kind>-<severity> existed
    cfg = {"benchmark": "fmnist6", "classifier": str(clf), "diffusion": str(diff), "batch_size": 4, "limit": 6,
           "val_limit": 6, "train_limit": 40, "gallery": 2, "sets": list(CORE_SET_NAMES),
           "methods": [{"name": "msp"}, {"name": "knn", "params": {"k": 3}},
                       {"name": "dg", "kind": "diffguard", "preset": "fmnist6-cfg", "overrides": FAST}],
           "fusion": [{"baseline": "*", "diffguard": "dg"}]}
    cfg.update(extra)
    return cfg


def test_select_rows_is_seeded_and_sorted() -> None:
    a = select_rows(100, 10, 0, "test")
    assert len(a) == 10 and (np.diff(a) > 0).all()
    assert (a == select_rows(100, 10, 0, "test")).all()
    assert not (a == select_rows(100, 10, 0, "other")).all()
    assert (select_rows(5, 10, 0, "x") == np.arange(5)).all()


def test_imglist_benchmark_end_to_end(tmp_path: Path, tiny_models: tuple[Path, Path]) -> None:
    spec = make_imglist_benchmark(tmp_path / "data", n=5, size=28, channels=1, num_classes=6)
    cfg = build_run_config({**tiny_config(tiny_models, benchmark="tiny", data_root=str(tmp_path / "data"), sets=None),
                            "limit": None, "val_limit": None, "train_limit": None})
    runner = Runner(cfg, tmp_path / "out", progress=False, spec=spec)
    with runner.run() as store:
        ev = evaluate(runner, store)
        report = write_outputs(runner, store, ev, {"machine": "test"})
    assert ev.complete == ["msp", "knn", "dg"] and not ev.incomplete
    from diffguard.evaluation.evaluate_run import summary_rows

    cost = {r["method"]: r["s / image"] for r in summary_rows(runner, ev)}
    dg_title, msp_title = cfg.method("dg").title, cfg.method("msp").title
    assert cost[dg_title] > cost[msp_title] > 0
    assert cost[f"{dg_title} + {msp_title}"] == pytest.approx(cost[dg_title] + cost[msp_title])
    sets = {(r["key"], r["set"]) for r in ev.rows}
    for key in ("msp", "knn", "dg", "dg+msp", "dg+knn"):
        assert {(key, "near1"), (key, "far1"), (key, "near"), (key, "far"), (key, "all")} <= sets
    for name in ("scores.csv", "metrics.csv", "metrics.json", "metrics.md", "thresholds.json", "report.html",
                 "summary.csv", "summary.json", "summary.md"):
        assert (tmp_path / "out" / name).is_file(), name
    import json

    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == json.loads(json.dumps(
        summary_rows(runner, ev)))
    html = report.read_text()
    assert html.count("<img") >= 3 and 'id="summary"' in html and 'id="metrics"' in html
    from diffguard.report.tables import ScoreTable

    table = ScoreTable.from_csv(tmp_path / "out" / "scores.csv")
    assert len(table) == 15 and np.isfinite(table.scores["dg"]).all()


def _run_cli(cfg_file: Path, out: Path, data_root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen([sys.executable, "-m", "diffguard", "benchmark", str(cfg_file), "--out", str(out),
                             "--data-root", str(data_root), "--no-progress", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def _done(db: Path, method: str) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM batches WHERE method = ?", (method,)).fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_twice_then_resume_gives_identical_results(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                          fake_fmnist_root: Path) -> None:
    cfg = tiny_config(tiny_models, batch_size=2, limit=8, val_limit=4)
    cfg["methods"][2]["overrides"] = ["inversion.steps=20", "inversion.cap=16"]
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    total = 2 * 4 + 4 * 6  # val, val-ood, val-far, val-csid: 4 rows / 2; test, test-csid, four OOD sets: 8 / 2
    db = tmp_path / "a" / "results.sqlite"
    for at in (2, 17):  # two kills at different moments: early in the DiffGuard pass, then past half of it
        proc = _run_cli(cfg_file, tmp_path / "a", fake_fmnist_root)
        deadline = time.time() + 300  # generous: a loaded machine (CI beside other jobs) runs it slowly
        while _done(db, "dg") < at and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.communicate()[0][-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert at <= _done(db, "dg") < total
    resumed = _run_cli(cfg_file, tmp_path / "a", fake_fmnist_root)
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[0][-2000:]
    fresh = _run_cli(cfg_file, tmp_path / "b", fake_fmnist_root)
    assert fresh.wait(timeout=300) == 0, fresh.communicate()[0][-2000:]
    assert (tmp_path / "a" / "scores.csv").read_text() == (tmp_path / "b" / "scores.csv").read_text()
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert ma == json.loads((tmp_path / "b" / "metrics.json").read_text())
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT set_name, COUNT(*) FROM scores WHERE method = 'dg' AND key = 'score' "
                           "GROUP BY set_name").fetchall()
    assert dict(rows) == {"val": 4, "test": 8, "near-fmnist": 8, "far-digits": 8, "far-gaussian": 8,
                          "far-uniform": 8, "val-ood": 4, "val-far": 4, "val-csid": 4, "test-csid": 8}


def test_changed_method_config_is_refused(tmp_path: Path, tiny_models: tuple[Path, Path],
                                          fake_fmnist_root: Path) -> None:
    base = tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=2, val_limit=2)
    base["methods"], base["fusion"] = base["methods"][:1], []  # no DiffGuard method left to fuse with
    Runner(build_run_config(base), tmp_path / "o", progress=False).run().close()
    changed = {**base, "methods": [{"name": "msp", "method": "mls"}]}  # same name, another detector
    with pytest.raises(StoreError, match="another configuration"):
        Runner(build_run_config(changed), tmp_path / "o", progress=False).run()
    with pytest.raises(StoreError, match="limit"):
        Runner(build_run_config({**base, "limit": 3}), tmp_path / "o", progress=False).run()


def test_config_overrides_and_unknown_names() -> None:
    data = {"benchmark": "fmnist6", "methods": [{"name": "knn"}, {"name": "dg", "kind": "diffguard",
                                                                  "preset": "fmnist6-cfg"}]}
    cfg = build_run_config(data, ["limit=10", "knn.k=7", "dg.guidance.scale=5"])
    assert cfg.limit == 10 and cfg.method("knn").params == {"k": 7}
    assert cfg.method("dg").params["overrides"] == ["guidance.scale=5"]
    with pytest.raises(ValueError, match="Did you mean limit"):
        build_run_config(data, ["limt=10"])
    with pytest.raises(ValueError, match="unknown config key"):
        build_run_config({**data, "colour": 1})
    with pytest.raises(ValueError, match="unknown key"):
        build_run_config({**data, "methods": [{"name": "knn", "paramz": {}}]})


def test_unavailable_method_is_skipped_and_reported(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                    fake_fmnist_root: Path) -> None:
    cfg = tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=2, val_limit=2,
                      ensemble=[str(tiny_models[0])])
    cfg["methods"], cfg["fusion"] = [{"name": "msp"}, {"name": "ensemble"}], []
    runner = Runner(build_run_config(cfg), tmp_path / "o", progress=False)
    with runner.run() as store:
        ev = evaluate(runner, store)
    assert "ensemble" in runner.skipped and ">= 2 classifiers" in runner.skipped["ensemble"]
    assert ev.complete == ["msp"] and ev.incomplete["ensemble"] > 0


def test_two_member_ensemble_runs(tmp_path: Path, tiny_models: tuple[Path, Path], fake_fmnist_root: Path) -> None:
    cfg = tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=2, val_limit=2,
                      ensemble=[str(tiny_models[0])] * 2)
    cfg["methods"], cfg["fusion"] = [{"name": "msp"}, {"name": "ensemble"}], []
    runner = Runner(build_run_config(cfg), tmp_path / "o", progress=False)
    with runner.run() as store:
        ev = evaluate(runner, store)
    assert ev.complete == ["msp", "ensemble"]
    np.testing.assert_allclose(ev.table.scores["ensemble"], ev.table.scores["msp"], atol=1e-6)


@pytest.mark.parametrize("name,env", [
    ("imagenet-gdm", ("ADM_CHECKPOINT", "RESNET50_WEIGHTS", "DISTS_WEIGHTS")),
    ("imagenet-ldm", ("LDM_CHECKPOINT", "RESNET50_WEIGHTS", "DISTS_WEIGHTS")),
    ("cifar10", ("DIFFNB_CKPT", "OPENOOD_CKPT"))])
def test_paper_configs_need_their_files(name: str, env: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    from diffguard.run.run_config import load_run_config

    for var in env:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=env[0]):
        load_run_config(name)
    for var in env:
        monkeypatch.setenv(var, f"/ckpt/{var.lower()}")
    cfg = load_run_config(name, ["classifier.num_classes=1000"])
    assert isinstance(cfg.classifier, dict) and cfg.classifier["num_classes"] == 1000
    assert any(m.is_diffguard for m in cfg.methods) and cfg.fusion
    assert str(cfg.diffusion).count("/ckpt/") == 1


def test_model_specs(tiny_models: tuple[Path, Path]) -> None:
    from diffguard.specs.model_specs import build_backend, build_classifier, spec_files

    clf = build_classifier({"type": "fmnist6", "folder": str(tiny_models[0])})
    import torch

    assert clf.logits(torch.zeros(1, 1, 28, 28)).shape == (1, 6)
    assert build_backend(str(tiny_models[1])).null_label == 6
    with pytest.raises(KeyError, match="Did you mean 'torchvision'"):
        build_classifier({"type": "torchvison", "arch": "resnet50", "weights": "x"})
    with pytest.raises(ValueError, match="needs a 'type'"):
        build_backend({"folder": "x"})
    assert spec_files({"type": "x", "folder": str(tiny_models[0]), "n": 3}, Path("d")) == [tiny_models[0]]


def test_module_specs_hash_the_network_source_too(tmp_path: Path) -> None:
    """A ``type: module`` spec's class file is in the manifest hashes: an edited network is noticed."""
    from diffguard.run.manifest import path_hash
    from diffguard.specs.model_specs import spec_files

    net = tmp_path / "nets.py"
    net.write_text("import torch\nclass Net(torch.nn.Module):\n    pass\n")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"0")
    spec = {"type": "module", "class": f"{net}:Net", "weights": str(weights)}
    assert spec_files(spec, Path("d")) == [weights, net]
    before = [path_hash(p) for p in spec_files(spec, Path("d"))]
    net.write_text("import torch\nclass Net(torch.nn.Module):\n    width = 2\n")
    assert [path_hash(p) for p in spec_files(spec, Path("d"))] != before
    pkg = spec_files({"type": "module", "class": "diffguard.nets.resnet:SmallResNet"}, Path("d"))
    assert [p.name for p in pkg] == ["resnet.py"]


def test_manifest_records_every_seed() -> None:
    from diffguard.cli.benchmark_cmd import run_seeds

    cfg = build_run_config({"benchmark": "fmnist6", "limit_seed": 3, "methods": [
        {"name": "msp"}, {"name": "mc_dropout", "params": {"seed": 5}}, {"name": "diffnb"},
        {"name": "dg", "kind": "diffguard", "preset": "fmnist6-cfg", "overrides": ["seed=7"]},
        {"name": "dg0", "kind": "diffguard", "preset": "fmnist6-clean-grad"}]})
    assert run_seeds(cfg) == {"limit_seed": 3, "msp": None, "mc_dropout": 5, "diffnb": 0, "dg": 7, "dg0": 0}


def test_ablation_config_writes_its_table_and_plot(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                   fake_fmnist_root: Path) -> None:
    from diffguard.run.run_config import load_run_config

    shipped = load_run_config("ablation-steps")  # the shipped configs parse, with one variant per setting
    assert shipped.ablation == "DDIM steps" and len(shipped.methods) == 4
    cfg = tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=3, val_limit=3, fusion=[],
                      ablation="DDIM steps")
    cfg["methods"] = [{"name": f"s{n}", "kind": "diffguard", "preset": "fmnist6-cfg", "display": str(n),
                       "overrides": [f"inversion.steps={n}", f"inversion.cap={n - 2}"]} for n in (4, 6)]
    run = build_run_config(cfg)
    runner = Runner(run, tmp_path / "a", progress=False)
    with runner.run() as store:
        ev = evaluate(runner, store)
        write_outputs(runner, store, ev, {"command": "diffguard benchmark x", "machine": "test box"})
    from diffguard.evaluation.evaluate_run import ablation_rows

    rows = ablation_rows(runner, ev)
    assert [r["DDIM steps"] for r in rows] == ["4", "6"] and all(r["s / image"] > 0 for r in rows)
    md = (tmp_path / "a" / "ablation.md").read_text()
    assert md.startswith("# Ablation: DDIM steps") and "| 4 |" in md and "| 6 |" in md
    assert "Command: `diffguard benchmark x`. Machine: test box." in md and "test 3" in md
    assert (tmp_path / "a" / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
