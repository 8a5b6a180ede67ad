"""``diffguard export RESULTS_DIR --out GUARD_DIR``: a benchmark run's method as a guard folder.

The guard (:mod:`diffguard.guard`) holds the method's fitted state, calibration, fusion and threshold, the input
geometry and the model specs with their hashes; ``diffguard score PATH --guard GUARD_DIR`` and ``diffguard serve
GUARD_DIR`` use it without the benchmark's data. The export itself reads the run's ID-train set when a part fits.
"""

from __future__ import annotations

import argparse

from diffguard.detectors.fusion import VetoBandFusion
from diffguard.guard.export import export_run
from diffguard.guard.guard import Guard


def add(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("export", help="write a run's method (or fusion) as a guard folder that scores anywhere")
    s.add_argument("results", help="a `diffguard benchmark` results folder")
    s.add_argument("--method", default=None, help="method or fusion key of the run (default: the run's "
                   "`recommended` detector, else its best on OOD validation, fusions included)")
    s.add_argument("--out", required=True, metavar="GUARD_DIR", help="the guard folder to write")
    s.add_argument("--copy-models", action="store_true",
                   help="copy the model files into GUARD_DIR/models so the folder moves as one piece")
    s.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N (for fitting)")
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    guard = export_run(args.results, args.method, args.device)
    out = guard.save(args.out, copy_models=args.copy_models)
    where = "with its model files" if args.copy_models else "pointing at the run's model files"
    print(f"guard {guard.title} [{guard.name}] written to {out} ({where}); threshold {guard.threshold:.6g} keeps "
          f"{guard.tpr:.0%} of {guard.n_val} ID-val images; DiffGuard {diffguard_use(guard)}")
    return 0


def diffguard_use(guard: Guard) -> str:
    """Where the guard runs DiffGuard, in words."""
    if guard.cascades:
        veto = isinstance(guard.fusion, VetoBandFusion)
        return ("runs only on the baseline band and the tier it may veto (cascade)" if veto
                else "runs only on the baseline band (cascade)")
    if any(p.is_diffguard for p in guard.parts.values()):
        return "runs on every image"
    return "is not part of it"
