"""How much do the "DiffGuard + X" band quantiles matter? Post-hoc, from a finished results folder.

The band rule (``diffguard.detectors.fusion.BandFusion``) trusts the baseline below its ID-validation quantile
``low_q`` and above ``high_q`` and lets DiffGuard rank the samples in between. The benchmark uses fixed defaults
(0.5, 0.99) chosen before any test score was seen; this script shows, for a results folder, how the fused AUROC
moves with the pair. It reads stored scores only (no network call), so it is a sensitivity report, not a way to
pick quantiles: choosing them on test sets would leak test data into the method.

    python benchmarks/fusion_sensitivity.py results/fmnist6 --diffguard diffguard-cfg --baselines vim,mds

Prints one Markdown table (AUROC per group of OOD sets, FPR@95 both conventions over all sets, in percent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from diffguard.detectors.fusion import BandFusion
from diffguard.run.run_config import build_run_config
from diffguard.evaluation.evaluate_run import ood_groups, score_table
from diffguard.evaluation.ood_metrics import compute_metrics, summarize
from diffguard.run.runner import Runner
from diffguard.run.store import ResultStore

PAIRS = ((0.0, 0.99), (0.5, 0.99), (0.5, 0.999), (0.8, 0.99), (0.9, 0.99), (0.95, 0.999))
COLUMNS = ("FPR@95 (OOD-pos, v1.5)", "FPR@95 (ID-pos, paper)")


def group_metrics(runner: Runner, table, scores: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-set and group (near / far / all) metrics of one score column of the table."""
    test = runner.spec.test_set
    groups = ood_groups(runner)
    per_set = {n: compute_metrics(scores[table.set_names == test], scores[table.set_names == n])
               for n in groups["all"]}
    return summarize(per_set, groups)


def row(label: str, metrics: dict[str, dict[str, float]]) -> str:
    aurocs = [f"{100 * metrics[g]['AUROC']:.2f}" if g in metrics else "" for g in ("near", "far", "all")]
    fprs = [f"{100 * metrics['all'][c]:.2f}" for c in COLUMNS]
    return f"| {label} | " + " | ".join(aurocs + fprs) + " |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="a folder written by `diffguard benchmark`")
    p.add_argument("--diffguard", default="diffguard-cfg", help="the DiffGuard method of the folder")
    p.add_argument("--baselines", default="vim,mds", help="comma-separated baseline methods of the folder")
    p.add_argument("--pairs", default=None,
                   help="quantile pairs as lo:hi,lo:hi (default: " + ",".join(f"{a}:{b}" for a, b in PAIRS) + ")")
    args = p.parse_args(argv)
    pairs = PAIRS if not args.pairs else tuple(tuple(float(v) for v in pair.split(":"))
                                               for pair in args.pairs.split(","))
    runner = Runner(build_run_config(json.loads((args.results / "run_config.json").read_text())), args.results,
                    progress=False)
    names = [args.diffguard, *args.baselines.split(",")]
    with ResultStore(args.results / "results.sqlite") as store:
        table = score_table(runner, store, names)
        val = runner.spec.by_role("val")[0].name
        val_ids = runner.sources[val].ids[runner.plan[val]].numpy()
        val_scores = {m: store.scores(m, val, val_ids) for m in names}
    missing = [m for m in names if np.isnan(table.scores[m]).any() or np.isnan(val_scores[m]).any()]
    if missing:
        raise SystemExit(f"incomplete scores for {missing} in {args.results}: finish the benchmark run first")
    dg = table.scores[args.diffguard]
    print("| method | AUROC near | AUROC far | AUROC all | " + " all | ".join(COLUMNS) + " all |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row(args.diffguard, group_metrics(runner, table, dg)))
    for b in names[1:]:
        print(row(b, group_metrics(runner, table, table.scores[b])))
        for lo, hi in pairs:
            fuse = BandFusion(lo, hi).fit(val_scores[b], val_scores[args.diffguard])
            print(row(f"{args.diffguard} + {b}, q = ({lo}, {hi})",
                      group_metrics(runner, table, fuse.fuse(table.scores[b], dg))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
