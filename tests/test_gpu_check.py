"""benchmarks/gpu_check.py runs end to end at tiny sizes on the CPU; the FLOP-floor table lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_modules import ROOT, load_script

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    return load_script(str(SCRIPT.relative_to(ROOT)))


def test_tiny_run_writes_the_table(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--tiny", "--n", "2", "--batch-size", "2", "--precision", "off",
                           "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["device"] == "cpu" and record["tiny"] and [r["preset"] for r in record["rows"]] == ["gdm", "ldm"]
    gdm, ldm = record["rows"]
    # gdm: 4-level grid, image at level 1, no early stop: 3 inversion + 4 denoising steps (one level noisier)
    assert gdm["evals_per_image"]["diffusion fwd"] == 7
    assert gdm["evals_per_image"]["classifier fwd+bwd"] == 8 * 4  # 8 cutouts per guided step
    # ldm: 4 steps of inversion (null class) and 4 of fused CFG (2 images each); encoder once, decoder once
    assert ldm["evals_per_image"]["diffusion fwd"] == 4 + 2 * 4
    assert ldm["evals_per_image"]["encoder fwd"] == 1 and ldm["evals_per_image"]["decoder fwd"] == 1
    assert gdm["flops_per_image"] > 0 and gdm["floor_images_per_s"] is None  # no peak known for a CPU
    assert "| gdm | off |" in capsys.readouterr().out


def test_peak_table(gpu_check):
    assert gpu_check.peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert gpu_check.peak_flops("NVIDIA H100 PCIe", "off") == pytest.approx(378e12)
    assert gpu_check.peak_flops("Tesla V100-SXM2-32GB", "fp16") == pytest.approx(125e12)
    assert gpu_check.peak_flops("cpu", "off") is None


def test_shell_script_tiny_runs_both_parts(tmp_path: Path, fake_fmnist_root: Path) -> None:
    """`benchmarks/gpu_check.sh --tiny`: the paper-size check and the authors'-structure comparison, on the CPU."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHON": sys.executable, "DIFFGUARD_DATA_ROOT": str(fake_fmnist_root),
           "GPU_CHECK_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT.with_suffix(".sh")), "--tiny", "--precision", "off"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "| gdm | off |" in done.stdout and "production vs the authors' execution structure" in done.stdout
    assert (tmp_path / "gpu_check.json").is_file() and (tmp_path / "authors" / "authors_structure.json").is_file()
