"""Full-spectrum validation table: every method and tuned fusion of a `diffguard tune` folder, per csid-val set.

Reads the validation scores a `diffguard tune CONFIG --fusion ...` run cached in ``OUT/scores/`` and its fusion
studies in ``OUT/tune.sqlite`` (no network call, no test set), and prints one Markdown row per detector: the mean
OOD-val AUROC, the share of each covariate-shifted validation set flagged at the threshold that keeps 95 % of ID-val,
the worst set at severities 1-2 (what the objective penalises), the share of ``val-far`` (far-OOD validation) at or
below that threshold (what a guard would let through; also per val-far kind: stripes, smoothed noise, blobs) and the
objective. Give the study's ``--far-penalty W`` when it
was tuned with one (``diffguard tune ... --far-set val-far --far-penalty W``), so the objective column is the study's.

    .venv/bin/python benchmarks/full_spectrum_validation.py results/tune-full-spectrum [--far-penalty W]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import optuna

from diffguard.data.fmnist6 import VAL_FAR_KINDS
from diffguard.detectors.fusion import create_fusion, diffguard_input
from diffguard.tune.objective import Objective
from diffguard.tune.study import best, load_studies
from diffguard.tune.trials import load_scores


def method_columns(out: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Method name -> set -> column (``score``, DiffGuard's ``dist:<name>``) -> scores, from the cached config-spec
    scores of ``OUT/scores/<method>/``."""
    cols = {}
    for folder in sorted((out / "scores").iterdir()):
        files = sorted(folder.glob("trial-config-*.npz"))
        if files:
            cols[folder.name] = load_scores(files[-1])
    return cols


def row(name: str, scores: dict[str, np.ndarray], objective: Objective, far_ids: np.ndarray) -> tuple[str, dict]:
    """(name, the objective's record plus ``far_by_kind``: the share of each val-far kind at or below the
    threshold)."""
    val_ood = {s: v for s, v in scores.items() if s in ("val-ood", "val-far")}
    csid = {s: v for s, v in scores.items() if s.startswith("val-csid")}
    ev = objective.evaluate(scores["val"], val_ood, csid).attrs()
    far = scores["val-far"]
    ev["far_by_kind"] = [objective.far_pass({"val-far": far[far_ids % len(VAL_FAR_KINDS) == k]}, ev["threshold"])
                         for k in range(len(VAL_FAR_KINDS))]
    return name, ev


def main(out: Path, far_penalty: float = 0.0) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cols = method_columns(out)
    objective = Objective(far_penalty=far_penalty, far_sets=("val-far",))
    far_ids = next(iter(cols.values()))["val-far"]["ids"]
    if any(not np.array_equal(sets["val-far"]["ids"], far_ids) for sets in cols.values()):
        raise SystemExit("the methods' val-far scores are not stored in one image order; rerun the study")
    rows = [row(m, {s: c["score"] for s, c in sets.items()}, objective, far_ids) for m, sets in cols.items()]
    for study_name, study in sorted(load_studies(out).items()):
        trial = best(study)
        if trial is None or not study_name.startswith("fusion:"):
            continue
        dg, base = study_name[len("fusion:"):].split("+", 1)
        params = dict(trial.user_attrs["spec"])
        kwargs = {k: v for k, v in params.items() if k not in ("rule", "baseline", "diffguard")}
        rule = create_fusion(params["rule"], **kwargs)
        rule.fit(cols[base]["val"]["score"], diffguard_input(rule, cols[dg]["val"]))
        fused = {s: rule.fuse(cols[base][s]["score"], diffguard_input(rule, cols[dg][s])) for s in cols[dg]}
        label = f"{dg} + {base} ({trial.user_attrs['spec']['rule']})"
        rows.append(row(label, fused, objective, far_ids))
    sets = sorted({s for _, ev in rows for s in ev["csid_per_set"]}, key=lambda s: (len(s) > 8, s))
    print("| detector | objective | AUROC (mean OOD-val) | worst csid (sev 1-2) | val-far passed | "
          f"val-far passed: {' / '.join(VAL_FAR_KINDS)} | " + " | ".join(s.replace("val-csid-", "") or s for s in sets)
          + " |")
    print("|---|" + "---:|" * (5 + len(sets)))
    for name, ev in rows:
        cells = " | ".join(f"{100 * ev['csid_per_set'][s]:.1f}" for s in sets)
        kinds = " / ".join(f"{100 * v:.1f}" for v in ev["far_by_kind"])
        print(f"| {name} | {ev['objective']:.4f} | {100 * ev['mean_auroc']:.2f} | {100 * ev['csid_flag_rate']:.1f} | "
              f"{100 * ev['far_pass_rate']:.1f} | {kinds} | {cells} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="results/tune-full-spectrum", type=Path, help="a `diffguard tune` folder")
    ap.add_argument("--far-penalty", type=float, default=0.0, help="the study's --far-penalty (default 0)")
    args = ap.parse_args()
    main(args.out, args.far_penalty)
