"""A new domain end to end, only through the command line, as a user with their own images would do it:

a generated dataset on disk (three classes of 16x16 RGB shapes as class folders, plus OOD folders), a YAML
benchmark, both models trained for a few steps by ``diffguard train --data``, ``diffguard benchmark`` on it,
``diffguard score --from`` for a DiffGuard method, a baseline and a fusion, and ``diffguard report``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffguard.cli import main
from user_data import make_shapes


def test_new_domain_from_images_on_disk_to_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = make_shapes(tmp_path / "shapes", n_train=10, n_val=4, n_test=3)
    models = tmp_path / "models"
    common = ["--data", str(bench), "--threads", "1", "--device", "cpu", "--warmup", "1"]
    assert main(["train", "classifier", *common, "--steps", "3", "--batch-size", "8", "--width", "4",
                 "--out", str(models / "clf"), "--ckpt-dir", str(tmp_path / "ck1")]) == 0
    assert main(["train", "diffusion", *common, "--steps", "3", "--batch-size", "8", "--channels", "8,16,16",
                 "--attention-lowest", "0", "--out", str(models / "diff"), "--ckpt-dir", str(tmp_path / "ck2")]) == 0

    run_cfg = {
        "benchmark": str(bench), "classifier": str(models / "clf"), "diffusion": str(models / "diff"),
        "batch_size": 8, "gallery": 1,
        "methods": [{"name": "msp"}, {"name": "knn", "params": {"k": 3}},
                    {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg", "calibration": "class",
                     "overrides": ["inversion.steps=4", "inversion.cap=3", "distances=('l2','logits_l1')"]}],
        "fusion": [{"baseline": "knn", "diffguard": "dg"},
                   {"baseline": "msp", "diffguard": "dg", "rule": "weighted", "weight": 0.7}],
    }
    (tmp_path / "run.yaml").write_text(json.dumps(run_cfg))
    results = tmp_path / "results"
    assert main(["benchmark", str(tmp_path / "run.yaml"), "--out", str(results), "--no-progress",
                 "--threads", "1"]) == 0
    assert (results / "report.html").is_file() and json.loads((results / "run_config.json").read_text())

    new_images = tmp_path / "shapes" / "data" / "noise"  # images of no set of the run's config's methods' fits
    metrics = json.loads((results / "metrics.json").read_text())
    assert "dg+msp:weighted" in json.dumps(metrics)
    for method in ("dg", "knn", "dg+knn", "dg+msp:weighted"):
        out = tmp_path / f"{method}.json"
        assert main(["score", str(new_images), "--from", str(results), "--method", method, "--out", str(out),
                     "--no-progress"]) == 0
        rows = json.loads(out.read_text())["rows"]
        assert [r["status"] for r in rows] == ["ok"] * 2  # the folder's top level holds 2 of its 3 images
    capsys.readouterr()
    assert main(["report", str(results)]) == 0
    assert "dg" in capsys.readouterr().out
