"""benchmarks/fusion_sensitivity.py and per_distance.py on a tiny finished run, checked against the benchmark's rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffguard.run.run_config import build_run_config
from diffguard.evaluation.evaluate_run import evaluate
from diffguard.run.run_config import config_dict
from diffguard.run.runner import Runner
from test_runner import tiny_config
from test_throughput import load_script


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[Path, Path], fake_fmnist_root: Path):
    """A tiny finished run (msp, knn, dg = fmnist6-cfg) and its evaluation."""
    out = tmp_path_factory.mktemp("run")
    cfg = build_run_config(tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=6, val_limit=6))
    runner = Runner(cfg, out, progress=False)
    with runner.run() as store:
        ev = evaluate(runner, store)
    (out / "run_config.json").write_text(json.dumps(config_dict(cfg)))
    return out, ev


def test_default_pair_matches_the_benchmark_fusion(finished, capsys: pytest.CaptureFixture[str]) -> None:
    folder, ev = finished
    script = load_script("fusion_sensitivity")
    assert script.main([str(folder), "--diffguard", "dg", "--baselines", "msp,knn",
                        "--pairs", "0.5:0.99,0.9:0.99"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 1 + 2 * 3  # header, rule, dg, then per baseline: itself + 2 pairs
    fused = next(line for line in lines if line.startswith("| dg + msp, q = (0.5, 0.99)"))
    want = next(r for r in ev.rows if r["key"] == "dg+msp" and r["set"] == "all")
    assert fused.split(" | ")[3] == f"{100 * want['AUROC']:.2f}"
    with pytest.raises(SystemExit, match="incomplete scores"):
        script.main([str(folder), "--diffguard", "dg", "--baselines", "ebo"])


def test_per_distance_row_of_the_score_matches_the_benchmark(finished, capsys: pytest.CaptureFixture[str]) -> None:
    folder, ev = finished
    script = load_script("per_distance")
    assert script.main([str(folder), "--methods", "dg"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split(" | ")[0][len("| dg, "):] for line in lines[2:]]
    assert names == ["gmsd", "l2", "logits_l1", "psnr", "ssim"]  # every distance of the fmnist6 preset
    want = next(r for r in ev.rows if r["key"] == "dg" and r["set"] == "all")  # the preset scores logits_l1
    assert lines[2 + names.index("logits_l1")].split(" | ")[3] == f"{100 * want['AUROC']:.2f}"
    l2, psnr = (lines[2 + names.index(n)].split(" | ")[1:] for n in ("l2", "psnr"))
    assert l2[:5] == psnr[:5]  # the psnr distance (100 dB - PSNR) increases with l2: the same ranking
    assert len(l2) == 8 and all(float(v.strip(" |")) > 0 for v in l2[5:])  # mean ID, near, far distances
