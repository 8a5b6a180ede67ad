"""Every stored distance of a DiffGuard method as an OOD score, from a finished results folder.

A DiffGuard method reports one distance as its score (the preset's, chosen before any test score was seen), but the
store keeps every distance it computed (``dist:<name>`` keys: logits_l1, l2, psnr, ssim, gmsd for the fmnist6
presets). This script evaluates each of them on the same images, with no network call. It is a diagnostic, not a
way to choose the distance: choosing on the test sets would leak test data into the method.

    python benchmarks/per_distance.py results/fmnist6 --methods diffguard-cfg,diffguard-clean-grad

Prints one Markdown table: AUROC per group of OOD sets and FPR@95 in both conventions over all sets (in percent),
then the mean distance over the ID test set, the near-OOD sets and the far-OOD sets (how much the synthesis
changes each kind of image).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fusion_sensitivity import COLUMNS, group_metrics, row  # noqa: E402

from diffguard.run.run_config import build_run_config  # noqa: E402
from diffguard.evaluation.evaluate_run import score_table  # noqa: E402
from diffguard.run.runner import Runner  # noqa: E402
from diffguard.run.store import ResultStore  # noqa: E402


def distance_scores(store: ResultStore, table, method: str) -> dict[str, np.ndarray]:
    """``dist:<name>`` -> (N,) values over the table's rows (NaN where missing)."""
    out = {}
    for key in store.score_keys(method):
        if not key.startswith("dist:"):
            continue
        parts = [store.scores(method, name, table.ids[table.set_names == name], key=key)
                 for name in dict.fromkeys(table.set_names)]
        out[key] = np.concatenate(parts)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="a folder written by `diffguard benchmark`")
    p.add_argument("--methods", default="diffguard-cfg", help="comma-separated DiffGuard methods of the folder")
    args = p.parse_args(argv)
    runner = Runner(build_run_config(json.loads((args.results / "run_config.json").read_text())), args.results,
                    progress=False)
    methods = args.methods.split(",")
    print("| method, distance | AUROC near | AUROC far | AUROC all | " + " all | ".join(COLUMNS)
          + " all | mean ID | mean near | mean far |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with ResultStore(args.results / "results.sqlite") as store:
        table = score_table(runner, store, methods)
        by_role = [np.isin(table.set_names, [n for n, r in table.roles.items() if r == role])
                   for role in ("id", "near", "far")]
        for m in methods:
            dists = distance_scores(store, table, m)
            if not dists or any(np.isnan(v).any() for v in dists.values()):
                raise SystemExit(f"{m}: no complete distances in {args.results}; finish the benchmark run first")
            for key, values in dists.items():
                means = [values[mask].mean() for mask in by_role]
                print(row(f"{m}, {key[5:]}", group_metrics(runner, table, values))
                      + " " + " | ".join(f"{v:.4g}" for v in means) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
