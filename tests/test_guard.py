"""The guard: export a run's method, score with nothing but the folder, cascade, hashes, versions, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from guard_fixtures import make_guard
from PIL import Image

from diffguard import Guard
from diffguard.cli import main
from diffguard.detectors.fusion import create_fusion, diffguard_input
from diffguard.errors import UserError
from diffguard.guard.export import export_from_run, load_run
from diffguard.guard.guard import rule_cascades

pytestmark = pytest.mark.slow


def _test_images(run: Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """The run's planned test and near-OOD images, their ids and every method's stored scores on them."""
    runner, store = load_run(run)
    with store:
        xs, ids, stored = [], [], {}
        for name in ("test", "near-fmnist"):
            src, rows = runner.sources[name], runner.plan[name]
            xs.append(src.load(rows))
            ids.append(src.ids[rows])
            for m in ("msp", "knn", "dg"):
                stored.setdefault(m, []).append(store.scores(m, name, src.ids[rows].numpy()))
    return torch.cat(xs), torch.cat(ids), {m: np.concatenate(v) for m, v in stored.items()}


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, tiny_models: tuple[Path, Path]) -> dict:
    """Guards exported with their models copied, then the run, its data and the models made unavailable."""
    base = tmp_path_factory.mktemp("moved")
    x, ids, stored = _test_images(tiny_run)
    guards = {m: make_guard(base / m.replace("+", "_").replace(":", "_"), tiny_run, m, copy_models=True)
              for m in ("knn", "dg", "dg+knn", "dg+msp:weighted", "dg+knn:veto", "dg+knn:veto-split")}
    return {"guards": guards, "x": x, "ids": ids, "stored": stored}


def test_guard_folder_is_readable_and_holds_no_pickle(tiny_guard: Path) -> None:
    config = json.loads((tiny_guard / "guard.json").read_text())
    assert config["name"] == "dg+knn" and config["fusion"]["rule"] == "band"
    assert set(config["fusion"]["fitted"]) >= {"low_threshold", "high_threshold"}
    assert config["threshold"]["tpr"] == 0.95 and "0.99" in config["threshold"]["val_quantiles"]
    assert config["input"] == {**config["input"], "size": 28, "channels": 1, "range": [-1.0, 1.0]}
    assert config["input"]["normalisation"]["formula"] == "((x + 1) / 2 - mean) / std"
    dg = next(p for p in config["parts"] if p["name"] == "dg")
    assert dg["settings"]["preset"] == "fmnist6-cfg" and dg["settings"]["inversion"]["steps"] == 6  # overrides applied
    assert all(len(f["sha256"]) == 64 for rec in config["models"].values() for f in rec["files"])
    assert {"diffguard", "torch"} <= set(config["versions"])
    assert sorted(p.name for p in tiny_guard.iterdir()) == ["guard.json", "state.safetensors"]


def test_scores_with_the_data_and_models_gone_equal_the_run(moved: dict, tiny_run: Path, fake_fmnist_root: Path,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFGUARD_DATA_ROOT", str(tmp_path / "nothing"))
    hidden = fake_fmnist_root.with_name(fake_fmnist_root.name + "-hidden")
    fake_fmnist_root.rename(hidden)
    try:
        x, ids, stored = moved["x"], moved["ids"], moved["stored"]
        for method in ("knn", "dg"):
            got = Guard.load(moved["guards"][method]).score(x, ids)
            np.testing.assert_allclose(got.score, stored[method], rtol=1e-5, atol=1e-7)
            assert got.diffguard_ran.all() == (method == "dg")
        fused = Guard.load(moved["guards"]["dg+knn"]).score(x, ids)
        assert np.isfinite(fused.score).all() and fused.is_ood.dtype == bool and fused.label.dtype == np.int64
    finally:
        hidden.rename(fake_fmnist_root)


@pytest.mark.parametrize("key", ["dg+knn", "dg+knn:veto", "dg+knn:veto-split"])
def test_cascade_runs_diffguard_where_the_rule_reads_it_and_changes_nothing(moved: dict, key: str) -> None:
    guard = Guard.load(moved["guards"][key])
    x, ids = moved["x"], moved["ids"]
    result = guard.score(x, ids)
    knn, dg = guard.parts["knn"], guard.parts["dg"]
    b = knn.detector.score_images(x, ids).double().numpy()
    columns = guard.part_columns(dg, x, ids, ("score", "dist:gmsd", "dist:l2"))  # DiffGuard on every image
    d = diffguard_input(guard.fusion, columns)
    full = guard.fusion.fuse(b, d)
    # DiffGuard's float32 networks see other batch compositions in the cascade: equal up to float32 rounding
    np.testing.assert_allclose(result.score, full, rtol=1e-5, atol=1e-7)
    assert np.array_equal(result.is_ood, full > guard.threshold)
    tiers = guard.fusion.tiers(b, d)
    need = guard.fusion.needs_diffguard(b)   # band: tier 1; veto rules: the band and the vetoable tier-2 samples
    expected = tiers == 1 if key == "dg+knn" else (tiers >= 1) & (b <= guard.fusion.report_state()["veto_cap"])
    assert np.array_equal(need, expected)
    assert np.array_equal(result.diffguard_ran, need) and need.any()
    assert np.isnan(result.parts["dg"][~need]).all() and (key != "dg+knn" or not need.all())
    np.testing.assert_allclose(result.parts["dg"][need], columns["score"][need], rtol=1e-5, atol=1e-7)


def test_veto_split_guard_reads_two_distances_and_scores_as_exported(moved: dict, tiny_run: Path) -> None:
    """The saved veto-split guard keeps its columns and fitted constants (ID-val of the run, as its evaluation fits
    them) and scores exactly as the guard exported in memory."""
    key = "dg+knn:veto-split"
    loaded = Guard.load(moved["guards"][key])
    assert loaded.fusion.diffguard_columns == ("dist:gmsd", "dist:l2") and loaded.cascades
    saved = json.loads((moved["guards"][key] / "guard.json").read_text())["fusion"]
    assert saved["rule"] == "veto-split" and saved["params"]["veto_by"] == "gmsd" and saved["params"]["rank_by"] == "l2"
    runner, store = load_run(tiny_run)
    with store:
        fresh = export_from_run(runner, store, key)
        val = "val"
        ids = runner.sources[val].ids[runner.plan[val]].numpy()
        gmsd = store.scores("dg", val, ids, key="dist:gmsd")
    thresholds = json.loads((tiny_run / "thresholds.json").read_text())["thresholds"]
    assert loaded.threshold == pytest.approx(thresholds[key]) and fresh.threshold == loaded.threshold
    assert loaded.fusion.report_state() == pytest.approx(fresh.fusion.report_state())
    assert loaded.fusion.report_state()["veto_threshold"] == pytest.approx(np.quantile(gmsd, 0.5))
    x, ids = moved["x"], moved["ids"]
    a, b = loaded.score(x, ids), fresh.score(x, ids)
    np.testing.assert_allclose(a.score, b.score, rtol=1e-5, atol=1e-7)
    assert np.array_equal(a.is_ood, b.is_ood) and np.array_equal(a.diffguard_ran, b.diffguard_ran)


def test_weighted_fusion_runs_diffguard_on_every_image(moved: dict) -> None:
    guard = Guard.load(moved["guards"]["dg+msp:weighted"])
    assert guard.score(moved["x"], moved["ids"]).diffguard_ran.all() and not guard.cascades


def test_changed_model_file_is_refused_and_other_version_warns(tiny_run: Path, tmp_path: Path) -> None:
    guard = make_guard(tmp_path / "g", tiny_run, "knn", copy_models=True)
    config = json.loads((guard / "guard.json").read_text())
    config["versions"]["diffguard"] = "0.0.1"
    (guard / "guard.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="written by diffguard 0.0.1"):
        Guard.load(guard)
    weights = next((guard / "models" / "classifier").rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(UserError, match=f"{weights.name}.*changed since export"), pytest.warns(UserWarning):
        Guard.load(guard)


def test_bad_input_is_refused_with_what_was_expected(tiny_guard: Path) -> None:
    guard = Guard.load(tiny_guard)
    with pytest.raises(UserError, match=r"shape \(N, 1, 28, 28\)"):
        guard.score(torch.zeros(2, 3, 28, 28))
    with pytest.raises(UserError, match="NaN"):
        guard.score(torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        guard.score(torch.full((1, 1, 28, 28), 255.0))
    with pytest.raises(UserError, match="item 1 is not a readable image"):
        guard.decode_images([_png_bytes(tiny_guard), b"not an image"])
    assert len(guard.score(torch.empty(0, 1, 28, 28))) == 0


def _png_bytes(tmp: Path) -> bytes:
    path = tmp.parent / "one.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(path)
    return path.read_bytes()


def test_score_cli_with_a_guard_writes_the_csv_columns(tiny_guard: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save(folder / "big.png")
    (folder / "broken.png").write_bytes(b"\x89PNG nope")
    out = tmp_path / "s.csv"
    assert main(["score", str(folder), "--guard", str(tiny_guard), "--out", str(out), "--no-progress"]) == 0
    with open(out) as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values())))[:7] == ["path", "status", "score", "prediction", "decision", "threshold",
                                                  "diffguard_ran"]
    assert rows["big.png"]["resized"] == "30x40" and rows["0.png"]["resized"] == ""
    assert rows["broken.png"]["status"] == "skipped"
    guard = Guard.load(tiny_guard)
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(folder / f"{i}.png"), dtype=np.float32))[None] / 127.5 - 1
                     for i in range(3)])
    direct = guard.score(x, torch.arange(3))
    for i in range(3):
        assert float(rows[f"{i}.png"]["score"]) == pytest.approx(direct.score[i], rel=1e-6)
    assert main(["score", str(folder), "--guard", str(tiny_guard), "--method", "knn", "--out", str(out)]) == 2


def test_copied_guard_moves_as_one_piece(moved: dict, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    shutil.copytree(moved["guards"]["knn"], target)
    config = json.loads((target / "guard.json").read_text())
    assert all(f["path"].startswith("models/") for rec in config["models"].values() for f in rec["files"])
    got = Guard.load(target).score(moved["x"], moved["ids"])
    np.testing.assert_allclose(got.score, moved["stored"]["knn"], rtol=1e-5, atol=1e-7)


def test_only_band_and_veto_rules_cascade() -> None:
    """What the cascade benchmark refuses before any compute is what a guard would not cascade."""
    assert all(rule_cascades(create_fusion(r)) for r in ("band", "veto", "veto-split"))
    assert not rule_cascades(create_fusion("weighted")) and not rule_cascades(None)
