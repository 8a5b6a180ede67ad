"""``diffguard report DIR [DIR ...]``: recompute metrics and rewrite the outputs of a results folder (merging
others into it first)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffguard.cli.benchmark_cmd import finish_run
from diffguard.run.distributed import merge_stores
from diffguard.run.run_config import build_run_config
from diffguard.run.runner import Runner
from diffguard.run.store import ResultStore, StoreError


def add(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="recompute metrics and rewrite the outputs of a results folder")
    r.add_argument("results", nargs="+", help="a folder written by `diffguard benchmark`; with more folders, "
                   "their results (same configuration) are first merged into the first one")
    r.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folder, *others = [Path(f) for f in args.results]
    cfg_file = folder / "run_config.json"
    if not cfg_file.is_file():
        raise StoreError(f"{folder} has no run_config.json; is it a folder written by `diffguard benchmark`?")
    _results_file(folder)  # a folder of metrics only (e.g. docs/results/) cannot be recomputed
    data = json.loads(cfg_file.read_text())
    fusion = data.pop("fusion", [])
    cfg = build_run_config({**data, "fusion": fusion})
    runner = Runner(cfg, folder, progress=False)
    with ResultStore(folder / "results.sqlite") as store:
        if others:
            merge_stores(store, [_results_file(f) for f in others])
            extra = sorted({r[0] for r in store.db.execute("SELECT DISTINCT method FROM batches")}
                           - {"classifier", *(m.name for m in cfg.methods)})
            if extra:
                print(f"note: merged results of methods not in {cfg_file} are kept but not reported: {extra}")
        manifest = store.get_meta("manifest") or {}
        return finish_run(runner, store, manifest)


def _results_file(folder: Path) -> Path:
    path = folder / "results.sqlite"
    if not path.is_file():
        raise StoreError(f"{folder} has no results.sqlite; is it a folder written by `diffguard benchmark`?")
    return path
