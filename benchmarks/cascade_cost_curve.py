"""The cascade's cost term on validation: what `diffguard tune --cascade-cost W` chooses for each W.

For a DiffGuard + baseline pair of a run config, the validation scores of both methods are computed once (ID-val,
OOD-val and csid-val draws of ``diffguard tune``, cached in ``OUT/scores/``), then one fusion study per cost weight
W runs on them (in memory, same seed and trial count), with the objective of ``diffguard tune`` minus
W x (share of validation images that need DiffGuard). Each row is the best trial of one W: the rule it chose, the
validation AUROC (mean over OOD-val sets), the csid false-alarm rate, and the share that needs DiffGuard. Nothing
here reads a test set.

    OMP_WAIT_POLICY=PASSIVE bash scripts/with-tcmalloc.sh .venv/bin/python benchmarks/cascade_cost_curve.py \\
        --config fmnist6-full-spectrum --pair diffguard-tuned+vim-tuned --out results/tune-full-spectrum

(with the ``--out`` folder of a ``diffguard tune`` run on the same config and limits, the validation scores it
cached are reused).

Prints a Markdown table and writes ``OUT/cascade_cost_curve.png`` (validation AUROC against the DiffGuard share).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from diffguard.bench.open_sets import resolve_benchmark  # noqa: E402
from diffguard.devices import resolve_device  # noqa: E402
from diffguard.run.run_config import load_run_config  # noqa: E402
from diffguard.sysinfo import machine  # noqa: E402
from diffguard.tune.data import Limits, Models, ValidationData  # noqa: E402
from diffguard.tune.objective import Objective  # noqa: E402
from diffguard.tune.study import best, run_study  # noqa: E402
from diffguard.tune.tuner import fusion_plan, method_scores, split_pair  # noqa: E402

WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="fmnist6-full-spectrum")
    p.add_argument("--pair", default="diffguard-tuned+vim-tuned", help="DIFFGUARD+BASELINE methods of the config")
    p.add_argument("--val-limit", type=int, default=600, help="ID-val and OOD-val images per set")
    p.add_argument("--csid-limit", type=int, default=300, help="images per covariate-shifted validation set")
    p.add_argument("--trials", type=int, default=60, help="fusion trials per cost weight")
    p.add_argument("--out", default="results/tune-full-spectrum")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_run_config(args.config)
    spec = resolve_benchmark(cfg.benchmark, needs=("val", "val_ood"), purpose="tuning")
    data = ValidationData(spec, cfg.data_root, Limits(val=args.val_limit, val_ood=args.val_limit,
                                                      csid=args.csid_limit), listed=cfg.sets)
    models = Models(cfg, resolve_device(cfg.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dg_name, base_name = split_pair(args.pair, cfg)
    dg, base = (method_scores(n, cfg, data, models, out, {}, True) for n in (dg_name, base_name))
    known = [f for f in cfg.fusion if (f.diffguard, f.baseline) == (dg_name, base_name)]
    start = {"rule": "band", "low_q": known[0].low_q if known else 0.5, "high_q": known[0].high_q if known else 0.99}
    rows = []
    for w in WEIGHTS:
        plan = fusion_plan(dg, base, data, Objective(cascade_cost=w), start)
        study = run_study(optuna.storages.InMemoryStorage(), plan, args.trials, 0)
        t = best(study)
        m = t.user_attrs["metrics"]
        rows.append((w, t.user_attrs["spec"], m["mean_auroc"], m["csid_flag_rate"], m["diffguard_share"]))
    sizes = ", ".join(f"{n} {data.size(n)}" for n in data.rows)
    print(f"validation draws: {sizes}; {args.trials} fusion trials per weight; machine: {machine()}\n")
    print("| cost weight W | rule chosen | AUROC (mean OOD-val) | csid flagged | share needing DiffGuard |")
    print("|---:|---|---:|---:|---:|")
    for w, spec_, auc, csid, share in rows:
        rule = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in spec_.items()
                         if k not in ("baseline", "diffguard"))
        csid_text = "-" if csid is None else f"{100 * csid:.1f} %"
        print(f"| {w:g} | {rule} | {100 * auc:.2f} | {csid_text} | {100 * share:.1f} % |")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([100 * r[4] for r in rows], [100 * r[2] for r in rows], "o-")
    for w, _, auc, _, share in rows:
        ax.annotate(f"W={w:g}", (100 * share, 100 * auc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("validation images that need DiffGuard (%)")
    ax.set_ylabel("mean OOD-val AUROC (%)")
    ax.set_title(f"{args.pair}: cascade cost on validation")
    fig.tight_layout()
    fig.savefig(out / "cascade_cost_curve.png", dpi=120)


if __name__ == "__main__":
    main()
