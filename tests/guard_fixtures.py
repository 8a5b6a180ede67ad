"""A finished tiny benchmark run and guards exported from it (tiny models, fake Fashion-MNIST): seconds to build."""

from __future__ import annotations

import json
from pathlib import Path

from diffguard.cli import main

DG_OVERRIDES = ["inversion.steps=6", "inversion.cap=4"]


def make_run(out: Path, tiny_models: tuple[Path, Path], data_root: Path) -> Path:
    """A finished run of MSP, KNN, DiffGuard (6 steps), the band fusion ``dg+knn``, the weighted ``dg+msp``, the
    veto rule ``dg+knn:veto`` and the split veto ``dg+knn:veto-split`` (GMSD vetoes, L2 ranks the band)."""
    clf, diff = tiny_models
    cfg = {"benchmark": "fmnist6", "classifier": str(clf), "diffusion": str(diff), "batch_size": 4, "limit": 6,
           "val_limit": 12, "train_limit": 40, "gallery": 1, "data_root": str(data_root),
           "sets": ["train", "val", "test", "near-fmnist"],
           "methods": [{"name": "msp"}, {"name": "knn", "params": {"k": 3}},
                       {"name": "dg", "method": "diffguard", "preset": "fmnist6-cfg", "overrides": DG_OVERRIDES}],
           "fusion": [{"baseline": "knn", "diffguard": "dg", "rule": "band", "low_q": 0.25, "high_q": 0.75},
                      {"baseline": "msp", "diffguard": "dg", "rule": "weighted", "weight": 0.5},
                      {"baseline": "knn", "diffguard": "dg", "rule": "veto", "low_q": 0.25, "high_q": 0.75,
                       "veto_q": 0.5},
                      {"baseline": "knn", "diffguard": "dg", "rule": "veto-split", "low_q": 0.25, "high_q": 0.75,
                       "veto_q": 0.5, "veto_by": "gmsd", "rank_by": "l2"}]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cfg.yaml").write_text(json.dumps(cfg))
    run = out / "run"
    assert main(["benchmark", str(out / "cfg.yaml"), "--out", str(run), "--no-progress", "--threads", "1"]) == 0
    return run


def make_guard(out: Path, run: Path, method: str = "dg+knn", copy_models: bool = False) -> Path:
    """``diffguard export RUN --method METHOD --out OUT``; returns OUT."""
    args = ["export", str(run), "--method", method, "--out", str(out)] + (["--copy-models"] if copy_models else [])
    assert main(args) == 0
    return out
