"""`diffguard score`: a folder with good, corrupt and non-image files; calibration on ID-val; decisions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffguard.cli import main

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


def test_score_uses_a_results_folder_threshold(tmp_path: Path, tiny_models: tuple[Path, Path]) -> None:
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "thresholds.json").write_text(json.dumps({"thresholds": {"dg": -1.0}}))
    out = tmp_path / "s.csv"
    assert main(["score", str(_folder(tmp_path)), "--out", str(out), "--calibration", str(tmp_path / "res"),
                 "--classifier", str(tiny_models[0]), "--diffusion", str(tiny_models[1]), *FAST]) == 0
    assert {r["decision"] for r in _rows(out).values() if r["status"] == "ok"} == {"ood"}
    assert main(["score", str(tmp_path / "imgs"), "--out", str(out),
                 "--calibration", str(tmp_path / "res"), "--method", "knn", "--classifier", str(tiny_models[0]),
                 "--diffusion", str(tiny_models[1]), *FAST]) == 2


def test_score_refuses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["score", str(tmp_path / "empty")]) == 2
