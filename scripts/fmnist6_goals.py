"""Check the fmnist6 goals (issue 13 point 6, issue 21 point 4) on the test sets of a finished run folder.

Usage: ``python scripts/fmnist6_goals.py docs/results/fmnist6 [--recommended KEY]``. Reads ``metrics.json`` and
``run_config.json`` (written by the run) and prints one Markdown row per goal: what was measured, the target, and
whether it is met. Nothing is chosen here: the recommended detector (the run config's ``recommended`` key, else
``--recommended``, default DiffGuard + ViM (tuned), the best validation objective in
docs/results/tune-fmnist6/large/) and every setting were fixed on validation data before the run; the best single
baseline is the one with the highest near-OOD test AUROC, as the goal is stated. The recommended detector's own
goals: near-OOD AUROC >= best baseline + 1, FPR@95 (both conventions) no worse than that baseline's, far-OOD AUROC
>= 99, and at most 10 % of every per-kind csid set of severity 1 and 2 flagged (when the run has them).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

NEAR, FAR = "near", "far"
FPRS = ("FPR@95 (OOD-pos, v1.5)", "FPR@95 (ID-pos, paper)")
CSID = "test-csid"


def load(folder: Path) -> tuple[dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]], str | None]:
    """((row key, set) -> metric row, the run's method specs, its ``recommended`` key or None)."""
    rows = json.loads((folder / "metrics.json").read_text())
    config = json.loads((folder / "run_config.json").read_text())
    return {(r["key"], r["set"]): r for r in rows}, config["methods"], config.get("recommended")


def recommended_goals(m: dict[tuple[str, str], dict[str, Any]], best: str,
                      rec: str) -> list[tuple[str, str, str, bool]]:
    """Issue 21's goals of the recommended detector against the best single baseline."""
    auroc = lambda key, s=NEAR: m[(key, s)]["AUROC"]  # noqa: E731
    out = [(f"recommended ({rec}): near AUROC >= {best} + 1", pct(auroc(rec)), pct(auroc(best) + 0.01),
            auroc(rec) >= auroc(best) + 0.01)]
    for c in FPRS:
        got, ref = m[(rec, "all")][c], m[(best, "all")][c]
        out.append((f"recommended: {c} (all OOD) <= {best}'s", pct(got), pct(ref), got <= ref))
    out.append(("recommended: far AUROC >= 99", pct(auroc(rec, FAR)), "99.00", auroc(rec, FAR) >= 0.99))
    kinds = sorted(s for (k, s) in m if k == rec and re.fullmatch(r"test-csid-[a-z]+-[12]", s))
    out += [(f"recommended: {s} flagged <= 10 %", pct(m[(rec, s)]["csid flagged"]), "10.00",
             m[(rec, s)]["csid flagged"] <= 0.10) for s in kinds]
    return out


def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def goals(m: dict[tuple[str, str], dict[str, Any]], methods: list[dict[str, Any]], dg: str, oracle: str,
          recommended: str) -> list[tuple[str, str, str, bool]]:
    """(goal, measured, target, met) rows; metric values are fractions, shown in percent."""
    auroc = lambda key, s=NEAR: m[(key, s)]["AUROC"]  # noqa: E731
    baselines = [x["name"] for x in methods if x["method"] != "diffguard" and (x["name"], NEAR) in m]
    best = max(baselines, key=auroc)
    out = [(f"DiffGuard alone, near AUROC >= best baseline ({best})", pct(auroc(dg)), pct(auroc(best)),
            auroc(dg) >= auroc(best))]
    fusions = sorted({k for k, _ in m if k.startswith(dg + "+")})
    for f in fusions:
        base = f.split("+", 1)[1].split(":")[0]
        if base != best:
            continue
        out.append((f"{f}: near AUROC >= {best} + 1", pct(auroc(f)), pct(auroc(best) + 0.01),
                    auroc(f) >= auroc(best) + 0.01))
        for c in FPRS:
            got, ref = m[(f, "all")][c], m[(best, "all")][c]
            out.append((f"{f}: {c} (all OOD) <= {best}'s", pct(got), pct(ref), got <= ref))
    far_sets = sorted(s for (k, s), r in m.items() if k == dg and r["group"] == FAR and s != FAR)
    out.append(("DiffGuard alone, far AUROC >= 95", pct(auroc(dg, FAR)), "95.00", auroc(dg, FAR) >= 0.95))
    out += [(f"DiffGuard alone, {s} AUROC > 90", pct(auroc(dg, s)), "90.00", auroc(dg, s) > 0.90) for s in far_sets]
    if (oracle, NEAR) in m:
        out.append(("oracle labels, near AUROC >= 95", pct(auroc(oracle)), "95.00", auroc(oracle) >= 0.95))
    flagged = lambda key: m[(key, CSID)]["csid flagged"]  # noqa: E731
    out.append((f"recommended ({recommended}): {CSID} flagged <= 10 %", pct(flagged(recommended)), "10.00",
                flagged(recommended) <= 0.10))
    out += recommended_goals(m, best, recommended)
    for f in fusions:
        base = f.split("+", 1)[1].split(":")[0]
        out.append((f"{f}: {CSID} flagged <= half of {base}'s", pct(flagged(f)), pct(flagged(base) / 2),
                    flagged(f) <= flagged(base) / 2))
        out.append((f"{f}: near AUROC >= {base}'s - 1", pct(auroc(f)), pct(auroc(base) - 0.01),
                    auroc(f) >= auroc(base) - 0.01))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a finished fmnist6-tuned results folder (metrics.json, run_config.json)")
    ap.add_argument("--diffguard", default="diffguard-tuned", help="DiffGuard's row key")
    ap.add_argument("--oracle", default="diffguard-tuned-oracle", help="the oracle-label row key")
    ap.add_argument("--recommended", default="diffguard-tuned+vim-tuned", help="the detector recommended on "
                    "validation, when the run config names none")
    args = ap.parse_args()
    m, methods, named = load(args.folder)
    rows = goals(m, methods, args.diffguard, args.oracle, named or args.recommended)
    print("| goal (test sets) | measured | target | met |\n|---|---:|---:|:---:|")
    for goal, got, target, ok in rows:
        print(f"| {goal} | {got} | {target} | {'yes' if ok else '**no**'} |")
    print(f"\n{sum(r[3] for r in rows)} of {len(rows)} met.")


if __name__ == "__main__":
    main()
