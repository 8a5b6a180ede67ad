"""The label-swap benchmark script runs end to end on the shipped models (tiny settings, fake data)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "label_swap.py"


def load_script():
    spec = importlib.util.spec_from_file_location("label_swap", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wrong_labels_differ_from_true_ones():
    mod = load_script()
    y = torch.arange(6).repeat(50)
    bad = mod.wrong_labels(y, seed=0)
    assert (bad != y).all() and set(bad.tolist()) == set(range(6))
    assert torch.equal(bad, mod.wrong_labels(y, seed=0))


def test_label_swap_runs(tmp_path, fake_fmnist_root, capsys):
    mod = load_script()
    rc = mod.main(["--preset", "fmnist6-cfg", "--split", "val", "--n", "4", "--batch-size", "4",
                   "--set", "inversion.steps=4", "--set", "inversion.cap=3", "--sweep", "guidance.cam_cut=0.2,None",
                   "--data-root", str(fake_fmnist_root), "--out", str(tmp_path)])
    assert rc == 0
    record = json.loads((tmp_path / "label_swap.json").read_text())
    assert [r["config"] for r in record["rows"]] == ["guidance.cam_cut=0.2", "guidance.cam_cut=None"]
    assert all(0.0 <= v <= 1.0 for r in record["rows"] for v in r["auroc"].values())
    assert "| config |" in capsys.readouterr().out
