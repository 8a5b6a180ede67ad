"""``diffguard benchmark CONFIG``: run every method of a config on its benchmark; resumable; prints the table."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from diffguard.bench.open_sets import resolve_benchmark
from diffguard.bench.user_yaml import benchmark_files, is_definition, looks_like_file, read_definition
from diffguard.data.fashion_mnist import resolve_root
from diffguard.evaluation.evaluate_run import ablation_rows, evaluate, summary_rows, write_outputs
from diffguard.report.tables import markdown_table
from diffguard.run.config_check import checked_run_config
from diffguard.run.distributed import dist_from_env, finish_group, init_group
from diffguard.run.manifest import build_manifest, model_hashes
from diffguard.run.preflight import preflight
from diffguard.run.run_config import config_dict, read_config_file
from diffguard.run.runner import Runner


def add(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("benchmark", help="run a benchmark: baselines, DiffGuard, fusion, metrics, report")
    b.add_argument("config", help="built-in config name (fmnist6), a run config YAML, or a benchmark definition YAML")
    b.add_argument("--out", default=None, help="results folder (default: results/<config name>); reruns resume")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting: limit=200, batch_size=32, diffguard-cfg.guidance.scale=5, knn.k=100")
    b.add_argument("--limit", type=int, default=None, help="at most N samples per test / OOD set (seeded draw)")
    b.add_argument("--methods", default=None, help="comma-separated subset of the config's methods to compute")
    b.add_argument("--data-root", default=None, help="data folder (fmnist6: Fashion-MNIST IDX files)")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--device", default=None, help="auto (CUDA when present; default), cpu, cuda, cuda:N")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("--seed", type=int, default=None,
                   help="seed of every stochastic method (cutouts, oracle labels, MC-Dropout, DiffNB); the sample "
                   "draw keeps limit_seed. Aggregate several runs with `diffguard seeds`")
    b.set_defaults(run=run)


def _threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def run_seeds(cfg: Any) -> dict[str, Any]:
    """Every seed the run depends on: the sample-limit seed and each method's own seed (crops, oracle labels,
    dropout, DiffNB noise); methods without randomness get None."""
    return {"limit_seed": cfg.limit_seed, **{m.name: m.seed() for m in cfg.methods}}


def seed_overrides(cfg: Any, seed: int) -> list[str]:
    """``NAME.seed=S`` overrides for every seeded method whose seed is not already ``seed`` (none for seedless
    methods, so a rerun with the config's own seeds resumes the same folder)."""
    return [f"{name}.seed={seed}" for name, s in run_seeds(cfg).items()
            if name != "limit_seed" and s is not None and s != seed]


def _data_files(cfg: Any) -> list[Path]:
    if cfg.benchmark == "fmnist6":
        return sorted(p for p in resolve_root(cfg.data_root).glob("*") if "ubyte" in p.name)
    if isinstance(cfg.benchmark, dict):  # a user benchmark: its image lists and the images of its folders

        return benchmark_files(resolve_benchmark(cfg.benchmark))
    return []


def _default_out(config: str, cfg: Any) -> Path:
    """results/<config file stem>; for a benchmark definition file run directly, results/<benchmark name>."""

    if isinstance(cfg.benchmark, dict) and looks_like_file(config) and is_definition(read_definition(config)):
        return Path("results") / cfg.benchmark["name"]
    return Path("results") / Path(config).stem


def finish_run(runner: Any, store: Any, manifest: dict[str, Any], methods: list[str] | None = None) -> int:
    """Evaluate, write the run's files and print its table. ``methods``: the ``--methods`` subset this invocation
    computed (None: all); the config's other methods without scores are "not requested", not "incomplete"."""

    ev = evaluate(runner, store)
    meta = {**manifest, "compute_seconds": {m.name: round(store.seconds(m.name), 1) for m in runner.cfg.methods},
            "incomplete": ev.incomplete, "skipped": runner.skipped}
    report = write_outputs(runner, store, ev, meta)
    if runner.cfg.ablation:
        print(markdown_table(ablation_rows(runner, ev)))
    else:
        summary = summary_rows(runner, ev)
        print(markdown_table(summary) if summary else "(no complete method to show yet)")
    for name, why in runner.skipped.items():
        print(f"not run: {name}: {why}")
    unasked = {m: n for m, n in ev.incomplete.items() if methods is not None and m not in methods}
    partial = {m: n for m, n in ev.incomplete.items() if m not in unasked}
    if unasked:
        print(f"not requested by --methods (run them with --methods {','.join(unasked)}): {sorted(unasked)}")
    if partial:
        print(f"incomplete, left out of the table (rerun the same command to finish): {partial}")
    print(f"results: {runner.out} (report: {report})")
    return 0


def run(args: argparse.Namespace) -> int:
    _threads(args.threads)
    overrides = list(args.overrides) + ([f"limit={args.limit}"] if args.limit is not None else [])
    overrides += [f"data_root={args.data_root!r}"] if args.data_root else []
    overrides += [f"device={args.device}"] if args.device else []
    data = read_config_file(args.config)
    methods = args.methods.split(",") if args.methods else None
    # the whole config, every problem at once, before a model is built or the results folder created
    cfg, spec = checked_run_config(data, overrides, methods)
    if args.seed is not None:
        cfg, spec = checked_run_config(data, overrides + seed_overrides(cfg, args.seed), methods)
    out = Path(args.out or _default_out(args.config, cfg))
    t0 = time.time()
    manifest = build_manifest({"models": model_hashes(cfg)}, {}, _data_files(cfg),
                              {"run_config": config_dict(cfg), "seeds": run_seeds(cfg)})
    dist = dist_from_env()  # torchrun: this process's rank; else a single process
    preflight(out)
    runner = Runner(cfg, out, manifest, progress=not args.no_progress and dist.main, spec=spec, dist=dist)
    init_group(dist)
    try:
        if dist.main:
            (out / "run_config.json").write_text(json.dumps(config_dict(cfg), indent=2))
        store = runner.run(methods)
        if store is None:  # a rank > 0: its share is in results.rank{r}.sqlite, rank 0 merged it
            return 0
        with store:
            manifest["wall_seconds_this_invocation"] = round(time.time() - t0, 1)
            return finish_run(runner, store, manifest, methods)
    finally:
        finish_group(dist)
