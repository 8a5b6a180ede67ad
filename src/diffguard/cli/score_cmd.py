"""``diffguard score PATH``: OOD scores and decisions for a folder of images or an image list.

Every way scores through a guard (:class:`~diffguard.guard.guard.Guard`: the fitted detector and its threshold,
95 % of ID-validation images accepted), so there is one scoring path:

* ``--guard GUARD_DIR``: a guard folder written by ``diffguard export`` (no benchmark data needed);
* ``--from RESULTS_DIR [--method NAME]``: exports a method of a benchmark run in memory -- baselines and
  "DiffGuard + X" included -- then scores (:mod:`diffguard.guard.export`); without ``--method`` the run's
  ``recommended`` detector, else its best on OOD validation (fusions included);
* ``--config CFG --method NAME``: builds a method of a run config as a guard calibrated now on the config's ID-val
  set (``--val-limit`` images; methods that fit are fitted on its ID-train set).

Unreadable or non-image files are not fatal: each gets a row with status ``skipped`` and the reason. Labels in an
image list (``-1`` = OOD) are turned into metrics. Nothing scored means exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffguard.bench.image_sources import DataError, read_image_list
from diffguard.errors import ConfigError
from diffguard.evaluation.ood_metrics import compute_metrics
from diffguard.guard.export import FEW_VAL, export_run, guard_from_config, read_json
from diffguard.guard.guard import Guard
from diffguard.run.run_config import load_run_config

SHOWN = 12  # rows printed to the terminal


def add(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("score", help="score a folder of images or an image list; decide at a calibrated threshold")
    s.add_argument("path", help="a folder of image files, or an image list (<relative/path> <label> per line)")
    s.add_argument("--guard", default=None, metavar="GUARD_DIR",
                   help="a guard folder written by `diffguard export`: its detector and threshold, no data needed")
    s.add_argument("--from", dest="from_dir", default=None, metavar="RESULTS_DIR",
                   help="a `diffguard benchmark` results folder: rebuild its method and use its threshold")
    s.add_argument("--method", default=None, help="method (or fusion 'diffguard+baseline') of the run or config "
                   "(default with --from: the run's best on OOD validation; with --config: diffguard-cfg)")
    s.add_argument("--config", default=None, help="without --from: a built-in config name or YAML file whose "
                   "models and method to use, calibrated on its ID-val set now (default: fmnist6)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="without --from: change one of the method's settings, e.g. guidance.scale=5 or k=10")
    s.add_argument("--classifier", default=None, help="without --from: classifier folder or spec file")
    s.add_argument("--diffusion", default=None, help="without --from: diffusion model folder")
    s.add_argument("--val-limit", type=int, default=200, help="without --from: ID-val images for the threshold")
    s.add_argument("--root", default=None, help="folder an image list's paths are relative to (default: the "
                   "run's data root, else the first parent folder of the list where its files exist)")
    s.add_argument("--data-root", default=None, help="the benchmark's data folder (for --config calibration)")
    s.add_argument("--out", default="scores.csv", help="one row per file; .csv or .json (default: scores.csv)")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(run=run)


def list_inputs(path: Path, root: Path | None, data_root: Path | None = None) -> tuple[list[Path], list[int] | None]:
    """Files of a folder (sorted, not recursive), or the paths and labels of an image list resolved like the
    benchmarks do: against ``root``, else the nearest parent folder of the list under which its files exist (an
    OpenOOD data root holds ``benchmark_imglist/...``), else ``data_root``."""
    check_path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file()), None
    items = read_image_list(path)
    base = root if root is not None else _list_root(path, [rel for rel, _ in items], data_root)
    return [base / rel for rel, _ in items], [lab for _, lab in items]


def check_path(path: Path) -> None:
    """Refuse a path with nothing to score (checked before any model is built or calibrated)."""
    if path.is_dir():
        if not any(p.is_file() for p in path.iterdir()):
            raise DataError(f"folder {path} holds no files to score")
    elif not path.is_file():
        raise DataError(f"{path} is neither a folder of images nor an image list")


def _list_root(path: Path, rels: list[str], data_root: Path | None) -> Path:
    for folder in [path.parent, *path.parent.parents, *([data_root] if data_root else [])]:
        if any((folder / rel).is_file() for rel in rels[:20]):
            return folder
    raise DataError(f"none of the first files of {path} (e.g. {rels[0]}) exists under the list's folder, its "
                    "parents or the data root; give the folder its paths are relative to with --root")


def from_guard(args: argparse.Namespace) -> tuple[Guard, str]:
    """(guard, source description) of ``--guard``."""
    if args.overrides or args.config or args.classifier or args.diffusion or args.method or args.from_dir:
        raise ConfigError("--guard scores with the guard folder as exported; --from, --method, --set, --config, "
                          "--classifier and --diffusion cannot be combined with it")
    guard = Guard.load(args.guard, device=args.device or "auto")
    return guard, f"{args.guard} [{guard.name}], {guard.n_val} ID-val images, {guard.tpr:.0%} TPR"


def from_run(args: argparse.Namespace) -> tuple[Guard, str]:
    """(guard exported in memory, source description) of ``--from``."""
    if args.overrides or args.config or args.classifier or args.diffusion:
        raise ConfigError("--from rebuilds the run's own models and settings; --set, --config, --classifier and "
                          "--diffusion cannot be combined with it")
    guard = export_run(args.from_dir, args.method, args.device)
    return guard, f"{args.from_dir} [{guard.name}], {guard.n_val} ID-val images, {guard.tpr:.0%} TPR"


def from_config(args: argparse.Namespace) -> tuple[Guard, str]:
    """(guard calibrated now, source description) of ``--config`` (default fmnist6)."""
    name = args.method or "diffguard-cfg"
    over = [f"{name}.{o}" for o in args.overrides]
    over += [f"{k}={v}" for k, v in (("classifier", args.classifier), ("diffusion", args.diffusion),
                                     ("data_root", args.data_root), ("device", args.device)) if v]
    cfg = load_run_config(args.config or "fmnist6", over)
    guard, _, source = guard_from_config(cfg, name, args.val_limit, args.batch_size, not args.no_progress)
    return guard, source


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    check_path(Path(args.path))
    guard, source = from_guard(args) if args.guard else from_run(args) if args.from_dir else from_config(args)
    data_root = args.data_root or (read_json(Path(args.from_dir) / "run_config.json").get("data_root")
                                   if args.from_dir else None)
    files, labels = list_inputs(Path(args.path), Path(args.root) if args.root else None,
                                Path(data_root) if data_root else None)
    if guard.n_val < FEW_VAL:
        print(f"diffguard: warning: the threshold rests on only {guard.n_val} ID-validation images (fewer than "
              f"about {FEW_VAL}): it is a rough estimate", file=sys.stderr)
    guard.batch_size = args.batch_size
    scored = guard.score_files(files)
    rows = _rows(scored, guard.threshold, labels)
    metrics = _metrics(rows) if labels is not None else {}
    _write(Path(args.out), rows, {"method": guard.name, "title": guard.title, "threshold": guard.threshold,
                                  "calibration": source, "metrics": metrics})
    ok = [r for r in rows if r["status"] == "ok"]
    flagged = sum(r["decision"] == "ood" for r in ok)
    ran = sum(bool(r.get("diffguard_ran")) for r in ok)
    print(f"{guard.title}: scored {len(ok)} image(s), skipped {len(rows) - len(ok)}; threshold "
          f"{guard.threshold:.6g} ({source}); {flagged} flagged OOD; DiffGuard ran on {ran}; written to {args.out}")
    _print_decisions(rows)
    for k, v in metrics.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    if not ok:
        print("diffguard: error: no image could be scored (see the reasons in the output)", file=sys.stderr)
        return 1
    return 0


def _rows(scored: list[dict[str, Any]], threshold: float, labels: list[int] | None) -> list[dict[str, Any]]:
    """The output rows: the guard's per-file rows in the CSV's terms (prediction, decision, threshold)."""
    rows = []
    for i, r in enumerate(scored):
        ok = r["status"] == "ok"
        row: dict[str, Any] = {"path": r["path"], "status": r["status"], "score": r.get("score"),
                               "prediction": r.get("label"), "decision": ("ood" if r["is_ood"] else "id") if ok
                               else None, "threshold": threshold if ok else None,
                               "diffguard_ran": r.get("diffguard_ran"), "resized": r["resized"], "reason": r["reason"]}
        if labels is not None:
            row["label"] = labels[i]
        rows.append(row)
    return rows


def _print_decisions(rows: list[dict[str, Any]], most: int = SHOWN) -> None:
    """The first ``most`` rows as a small table (file, decision, score, predicted class, DiffGuard ran)."""
    for r in rows[:most]:
        name = Path(r["path"]).name
        if r["status"] != "ok":
            print(f"  {name:24s} skipped: {r['reason']}")
            continue
        ran = "DiffGuard ran" if r["diffguard_ran"] else "baseline decided"
        print(f"  {name:24s} {r['decision'].upper():3s}  score {r['score']:.4g}  predicted class {r['prediction']}"
              f"  ({ran})")
    if len(rows) > most:
        print(f"  ... {len(rows) - most} more in the output file")


def _metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """AUROC, FPR@95 (both conventions) and the flag rates, from the list's labels (-1 = OOD, positive)."""

    done = [r for r in rows if r["status"] == "ok"]
    ind = np.array([r["score"] for r in done if r["label"] >= 0])
    ood = np.array([r["score"] for r in done if r["label"] < 0])
    out: dict[str, Any] = {"n_id": int(ind.size), "n_ood": int(ood.size)}
    if ind.size:
        out["id_flagged"] = float(np.mean([r["decision"] == "ood" for r in done if r["label"] >= 0]))
    if ood.size:
        out["ood_flagged"] = float(np.mean([r["decision"] == "ood" for r in done if r["label"] < 0]))
    if ind.size and ood.size:
        out.update(compute_metrics(ind, ood))
    return out


def _write(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({**meta, "rows": rows}, indent=2))
        return
    cols = ["path", "status", "score", "prediction", "decision", "threshold", *(["label"] if "label" in rows[0]
                                                                                   else []),
            "diffguard_ran", "resized", "reason"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols])
