"""benchmarks/fusion_sensitivity.py on a tiny finished run: its default-pair row equals the benchmark's fusion row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffguard.eval.config import build_run_config
from diffguard.eval.evaluate import evaluate
from diffguard.eval.plan import config_dict
from diffguard.eval.runner import Runner
from test_runner import tiny_config
from test_throughput import load_script


def test_default_pair_matches_the_benchmark_fusion(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                   fake_fmnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = build_run_config(tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=6, val_limit=6))
    runner = Runner(cfg, tmp_path / "r", progress=False)
    with runner.run() as store:
        ev = evaluate(runner, store)
    (tmp_path / "r" / "run_config.json").write_text(json.dumps(config_dict(cfg)))
    script = load_script("fusion_sensitivity")
    assert script.main([str(tmp_path / "r"), "--diffguard", "dg", "--baselines", "msp,knn",
                        "--pairs", "0.5:0.99,0.9:0.99"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 1 + 2 * 3  # header, rule, dg, then per baseline: itself + 2 pairs
    fused = next(line for line in lines if line.startswith("| dg + msp, q = (0.5, 0.99)"))
    want = next(r for r in ev.rows if r["key"] == "dg+msp" and r["set"] == "all")
    assert fused.split(" | ")[3] == f"{100 * want['AUROC']:.2f}"
    with pytest.raises(SystemExit, match="incomplete scores"):
        script.main([str(tmp_path / "r"), "--diffguard", "dg", "--baselines", "ebo"])
