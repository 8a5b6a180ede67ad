"""`diffguard score`: a folder with good, corrupt and non-image files; calibration on ID-val; decisions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffguard.cli import main
from guard_fixtures import make_run
from diffguard.errors import ConfigError

FAST = ["--set", "inversion.steps=6", "--set", "inversion.cap=4"]


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8)).save(folder / "rgba.png")  # RGBA, other size
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


def test_score_folder_with_bad_files(tmp_path: Path, tiny_models: tuple[Path, Path], fake_fmnist_root: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scores.csv"
    rc = main(["score", str(_folder(tmp_path)), "--out", str(out), "--val-limit", "4", "--data-root",
               str(fake_fmnist_root), "--classifier", str(tiny_models[0]), "--diffusion", str(tiny_models[1]),
               "--threads", "1", *FAST])
    assert rc == 0
    rows = _rows(out)
    assert {n for n, r in rows.items() if r["status"] == "ok"} == {"0.png", "1.png", "2.png", "rgba.png"}
    assert "corrupt" in rows["broken.png"]["reason"] and "not an image" in rows["notes.txt"]["reason"]
    thr = float(rows["0.png"]["threshold"])
    for r in rows.values():
        if r["status"] == "ok":
            assert r["decision"] == ("ood" if float(r["score"]) > thr else "id")
    assert "scored 4 image(s), skipped 2" in capsys.readouterr().out


def _run_folder(tmp_path: Path, tiny_models: tuple[Path, Path], fake_fmnist_root: Path) -> Path:
    """A finished tiny benchmark run (MSP, KNN, DiffGuard and their fusions) through the CLI."""
    return make_run(tmp_path, tiny_models, fake_fmnist_root)


def test_score_from_a_run_rebuilds_each_method(tmp_path: Path, tiny_models: tuple[Path, Path],
                                               fake_fmnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_folder(tmp_path, tiny_models, fake_fmnist_root)
    thresholds = json.loads((run / "thresholds.json").read_text())["thresholds"]
    folder = _folder(tmp_path)
    for method in ("dg", "knn", "dg+knn"):
        out = tmp_path / f"{method}.json"
        assert main(["score", str(folder), "--from", str(run), "--method", method, "--out", str(out),
                     "--no-progress"]) == 0
        res = json.loads(out.read_text())
        if method in thresholds:  # the run's own threshold, rebuilt from its stored validation scores
            assert res["threshold"] == pytest.approx(thresholds[method])
        ok = [r for r in res["rows"] if r["status"] == "ok"]
        assert len(ok) == 4 and all(r["decision"] == ("ood" if r["score"] > res["threshold"] else "id") for r in ok)
    assert "fewer than about 100" in capsys.readouterr().err  # 8 ID-val images
    # the run's test images scored again give the run's stored scores (same detector, same fitted statistics)
    from diffguard.guard.export import export_from_run, load_run

    runner, store = load_run(run)
    with store:
        src, rows = runner.sources["test"], runner.plan["test"]
        ids = src.ids[rows]
        for method in ("knn", "dg"):
            again = export_from_run(runner, store, method).score(src.load(rows), ids).score
            assert np.allclose(again, store.scores(method, "test", ids.numpy()), rtol=1e-5, atol=1e-7)
    # no --method and no OOD-validation set: refuse and list the choices
    assert main(["score", str(folder), "--from", str(run), "--out", str(tmp_path / "x.csv")]) == 2
    assert "dg+knn" in capsys.readouterr().err
    # changed model files: the run's thresholds do not apply
    cfg = json.loads((run / "run_config.json").read_text())
    other = tmp_path / "other_clf"
    import shutil

    shutil.copytree(tiny_models[0], other)
    (other / "config.json").write_text((other / "config.json").read_text().replace("}", ', "note": 1}', 1))
    cfg["classifier"] = str(other)
    (run / "run_config.json").write_text(json.dumps(cfg))
    assert main(["score", str(folder), "--from", str(run), "--method", "knn", "--out", str(tmp_path / "y.csv")]) == 2
    assert "classifier files differ" in capsys.readouterr().err


def test_score_image_list_labels_give_metrics_and_nothing_scored_fails(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                                       fake_fmnist_root: Path) -> None:
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    (root / "lists").mkdir()
    rng = np.random.default_rng(1)
    lines = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
        lines.append(f"imgs/{i}.png {-1 if i % 2 else 0}")
    (root / "lists" / "mine.txt").write_text("\n".join(lines) + "\n")  # paths relative to root, not the list
    out = tmp_path / "s.json"
    args = ["--data-root", str(fake_fmnist_root), "--classifier", str(tiny_models[0]), "--diffusion",
            str(tiny_models[1]), "--method", "msp", "--val-limit", "8", "--no-progress"]
    assert main(["score", str(root / "lists" / "mine.txt"), "--out", str(out), *args]) == 0
    res = json.loads(out.read_text())
    assert {r["status"] for r in res["rows"]} == {"ok"} and res["metrics"]["n_ood"] == 2 and "AUROC" in res["metrics"]
    (root / "lists" / "bad.txt").write_text("imgs/0.png 0\nimgs/missing.png -1\n")
    (root / "imgs" / "0.png").write_bytes(b"broken")
    assert main(["score", str(root / "lists" / "bad.txt"), "--root", str(root), "--out", str(out), *args]) == 1


def test_score_refuses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["score", str(tmp_path / "empty")]) == 2


def test_score_with_a_config_fusion_fits_both_parts_on_id_val(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                              fake_fmnist_root: Path) -> None:
    """``--config`` with a fusion key: both methods built, fitted, calibrated on the same ID-val rows, the fusion
    rule fitted on their scores, and the threshold taken from the fused ID-val scores."""
    from diffguard.guard.export import guard_from_config
    from diffguard.run.run_config import build_run_config

    cfg = {"benchmark": "fmnist6", "classifier": str(tiny_models[0]), "diffusion": str(tiny_models[1]),
           "data_root": str(fake_fmnist_root),
           "methods": [{"name": "msp"},
                       {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg", "calibration": "class",
                        "overrides": ["inversion.steps=6", "inversion.cap=4", "distances=('l1',)",
                                      "score_distance=l1"]}],
           "fusion": [{"baseline": "msp", "diffguard": "dg", "rule": "weighted", "weight": 0.5}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    guard, _, source = guard_from_config(build_run_config(cfg), "dg+msp:weighted", 6, 4)
    assert set(guard.parts) == {"msp", "dg"} and [n for n, p in guard.parts.items() if p.calibration] == ["dg"]
    assert guard.fusion.weight == 0.5 and "6 images" in source and np.isfinite(guard.threshold)
    with pytest.raises(ConfigError, match="not a fusion of this config"):
        guard_from_config(build_run_config(cfg), "dg+knn", 6, 4)
    out = tmp_path / "s.csv"
    assert main(["score", str(_folder(tmp_path)), "--config", str(path), "--method", "dg+msp:weighted",
                 "--val-limit", "6", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    rows = _rows(out)
    assert sum(r["status"] == "ok" for r in rows.values()) == 4


def test_score_with_a_config_veto_split_fits_on_the_calibrated_score_and_a_raw_distance(
        tmp_path: Path, tiny_models: tuple[Path, Path], fake_fmnist_root: Path) -> None:
    """A veto-split fusion of a config: DiffGuard's part yields its calibrated score (ranking the band) and its raw
    GMSD (the veto) on the same ID-val rows; the rule is fitted on them, the threshold on the fused scores."""
    from diffguard.detectors.fusion import diffguard_input
    from diffguard.evaluation.validation_rows import threshold_at_tpr
    from diffguard.guard.export import guard_from_config
    from diffguard.run.plan import select_rows
    from diffguard.run.run_config import build_run_config

    cfg = build_run_config({
        "benchmark": "fmnist6", "classifier": str(tiny_models[0]), "diffusion": str(tiny_models[1]),
        "data_root": str(fake_fmnist_root),
        "methods": [{"name": "msp"},
                    {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg", "calibration": "class",
                     "overrides": ["inversion.steps=6", "inversion.cap=4", "distances=('l1','gmsd')",
                                   "score_distance=l1"]}],
        "fusion": [{"baseline": "msp", "diffguard": "dg", "rule": "veto-split", "low_q": 0.2, "high_q": 0.6,
                    "veto_q": 0.5, "veto_by": "gmsd", "rank_by": "score"}]})
    guard, runner, _ = guard_from_config(cfg, "dg+msp:veto-split", 6, 4)
    assert guard.parts["dg"].calibration is not None and guard.fusion.diffguard_columns == ("dist:gmsd", "score")
    src = runner.sources["val"]
    rows = select_rows(len(src), 6, 0, "val")
    x, ids = src.load(rows), src.ids[rows]
    cols = guard.part_columns(guard.parts["dg"], x, ids, ("score", "dist:gmsd"))
    raw = guard.parts["dg"].detector.score_images(x, ids).double().numpy()
    assert not np.allclose(cols["score"], raw)  # the calibrated score, not the raw l1
    st = guard.fusion.report_state()
    assert st["veto_threshold"] == pytest.approx(np.quantile(cols["dist:gmsd"], 0.5), rel=1e-5)
    assert st["diffguard_median"] == pytest.approx(np.median(cols["score"]), rel=1e-5)
    b = guard.part_scores(guard.parts["msp"], x, ids)
    fused = guard.fusion.fuse(b, diffguard_input(guard.fusion, cols))
    assert guard.threshold == pytest.approx(threshold_at_tpr(fused), rel=1e-5)
