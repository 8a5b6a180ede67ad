"""``diffguard tune CONFIG``: hyper-parameter search for methods of a config (and fusion rules) on validation data
only -- ID-val, OOD-val and the covariate-shifted ID validation sets (role ``val_csid``; never the ID test set,
near / far OOD or test csid).

Studies live in ``<out>/tune.sqlite`` (Optuna): a rerun of the same command resumes, ``--trials`` counting the total.
Outputs: ``report.md``, ``objective_vs_cost.png``, ``tuned.yaml`` (a config with the chosen specs) and ``tune.json``.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import torch

from diffguard.errors import UserError
from diffguard.run.run_config import load_run_config
from diffguard.tune import Limits, Objective, tune


def add(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tune", help="hyper-parameter search on validation data (Optuna; resumable)")
    t.add_argument("config", help="built-in config name (fmnist6) or a run config YAML")
    t.add_argument("--method", action="append", default=[], metavar="NAME",
                   help="a method of the config to tune (repeat or comma-separate for several); its spec is the "
                        "starting point")
    t.add_argument("--fusion", action="append", default=[], metavar="DIFFGUARD+BASELINE",
                   help="tune the fusion rule of two methods of the config (band, weighted sum, veto or "
                        "veto-split with DiffGuard's distances), on their best tuned scores in --out, else on their "
                        "config specs' scores")
    t.add_argument("--trials", type=int, default=None,
                   help="total trials per method study (default: the grid size, else 20); reruns add the missing")
    t.add_argument("--fusion-trials", type=int, default=40, help="total trials per fusion study (default 40)")
    t.add_argument("--out", default=None, help="results folder (default: results/tune-<config>[-<method>])")
    t.add_argument("--val-limit", type=int, default=None, help="ID-val images (default: the config's val_limit)")
    t.add_argument("--val-ood-limit", type=int, default=500, help="images per OOD-val set (default 500)")
    t.add_argument("--csid-limit", type=int, default=500, help="images per csid-val set (default 500)")
    t.add_argument("--train-limit", type=int, default=None,
                   help="ID-train images for fits (default: the config's train_limit)")
    t.add_argument("--penalty", type=float, default=1.0, help="weight of csid false alarms above 5 %% (default 1)")
    t.add_argument("--cascade-cost", type=float, default=0.0, help="fusion studies: subtract W x the share of "
                   "validation images that need DiffGuard (the band cascade's cost; default 0)")
    t.add_argument("--far-set", action="append", default=[], metavar="SET",
                   help="an OOD-validation set that is far-OOD (fmnist6: val-far); repeatable; with --far-penalty")
    t.add_argument("--far-penalty", type=float, default=0.0, help="subtract W x the share of the --far-set images "
                   "at or below the 95 %%-TPR threshold (far-OOD a guard would pass; default 0)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config setting, as for `diffguard benchmark`")
    t.add_argument("--data-root", default=None, help="data folder (fmnist6: Fashion-MNIST IDX files)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--device", default=None, help="auto (CUDA when present; default), cpu, cuda, cuda:N")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--seed", type=int, default=0, help="seed of the samplers (TPE, grid order); default 0")
    t.set_defaults(run=run)


def _names(values: list[str]) -> list[str]:
    return [n for v in values for n in v.split(",") if n]


def default_out(config: str, methods: list[str], fusion: list[str]) -> Path:
    tail = f"-{methods[0]}" if len(methods) == 1 and not fusion else ""
    return Path("results") / f"tune-{Path(config).stem}{tail}"


def command_line(args: argparse.Namespace, out: Path) -> str:
    """The command that reproduces (or resumes) this run."""
    parts = ["diffguard", "tune", args.config]
    for m in _names(args.method):
        parts += ["--method", m]
    for f in args.fusion:
        parts += ["--fusion", f]
    for o in args.overrides:
        parts += ["--set", o]
    for f in args.far_set:
        parts += ["--far-set", f]
    options = {"--trials": args.trials, "--fusion-trials": args.fusion_trials if args.fusion else None,
               "--out": out, "--val-limit": args.val_limit, "--val-ood-limit": args.val_ood_limit,
               "--csid-limit": args.csid_limit, "--train-limit": args.train_limit, "--penalty": args.penalty,
               "--cascade-cost": args.cascade_cost, "--far-penalty": args.far_penalty or None,
               "--data-root": args.data_root, "--device": args.device, "--seed": args.seed}
    for key, value in options.items():
        if value is not None:
            parts += [key, str(value)]
    return shlex.join(parts)


def objective(args: argparse.Namespace) -> Objective:
    """The study's objective from the command line (a far penalty without far sets, or the reverse, is refused)."""
    if args.far_set and not args.far_penalty:
        raise UserError("--far-set names far-OOD validation sets for --far-penalty W (W > 0); give both or neither")
    try:
        return Objective(penalty=args.penalty, cascade_cost=args.cascade_cost, far_penalty=args.far_penalty,
                         far_sets=tuple(args.far_set))
    except ValueError as e:
        raise UserError(f"{e}: add --far-set NAME (an OOD-validation set of the config, e.g. val-far)") from e


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = _names(args.method)
    if not methods and not args.fusion:
        raise UserError("name what to tune: --method NAME (a method of the config) and/or --fusion DG+BASELINE")
    overrides = list(args.overrides) + ([f"data_root={args.data_root!r}"] if args.data_root else [])
    overrides += [f"device={args.device}"] if args.device else []
    cfg = load_run_config(args.config, overrides)
    out = Path(args.out) if args.out else default_out(args.config, methods, args.fusion)
    limits = Limits(val=args.val_limit if args.val_limit is not None else cfg.val_limit, val_ood=args.val_ood_limit,
                    csid=args.csid_limit, train=args.train_limit if args.train_limit is not None else cfg.train_limit,
                    seed=cfg.limit_seed)
    tune(cfg, out, methods, args.fusion, trials=args.trials, fusion_trials=args.fusion_trials, seed=args.seed,
         limits=limits, objective=objective(args), progress=not args.no_progress,
         command=command_line(args, out))
    return 0
