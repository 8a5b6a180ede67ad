"""The tuning report of a results folder, rebuilt from ``tune.sqlite`` after every run.

* ``report.md``: the objective, the validation data, the command that reproduces the run, and per study a table of
  trials sorted by objective (ties: FPR@95, then cost) with their cost in seconds per image;
* ``objective_vs_cost.png``: objective against seconds per image, one colour per study, the chosen trial starred;
* ``tuned.yaml``: a run config -- the source config plus, per tuned method, its best spec as ``<name>-tuned`` and per
  fusion pair its best band rule (``diffguard benchmark <out>/tuned.yaml`` evaluates them on the test sets);
* ``tune.json``: the same summary for programs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import yaml
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from diffguard.atomic_files import atomic_write_bytes, atomic_write_text
from diffguard.detectors.fusion import FUSION_RULES, create_fusion
from diffguard.report.plots import figure_png
from diffguard.report.tables import markdown_table
from diffguard.run.run_config import FusionConfig, config_dict
from diffguard.specs.method_specs import MethodConfig
from diffguard.tune import trials as tr
from diffguard.tune.data import ValidationData
from diffguard.tune.objective import Objective
from diffguard.tune.study import best, load_studies, ranked

FUSION_PREFIX = "fusion:"
TABLE_ROWS = 30


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def settings(t: FrozenTrial) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in t.params.items()) or "(defaults)"


def score_label(attrs: dict[str, Any]) -> str | None:
    """The chosen score column of a DiffGuard trial: ``l1``, ``l1 (class-calibrated)`` or ``gmsd+l2`` (a sum of
    ID-val z-scores); None for others."""
    column = attrs.get("column", "")
    for prefix in ("dist:", "sum:"):
        if column.startswith(prefix):
            return column[len(prefix):]
    if column.startswith("cal:"):
        return f"{column[4:]} (class-calibrated)"
    return None


def trial_note(attrs: dict[str, Any]) -> str:
    """Where a trial came from (start spec, retry, reused synthesis) and whether its ranking predates the class
    calibration (trials recorded before it existed were ranked on raw distances only) or deployable pairs (its
    objective is then that of the best single distance)."""
    notes = ["start spec"] if attrs.get("start") else []
    notes += [f"retry of #{attrs['retry_of']}"] if "retry_of" in attrs else []
    notes += [f"synthesis of #{attrs['reused_from']}"] if "reused_from" in attrs else []
    ranking = attrs.get("ranking") or []
    if ranking and not any("|" in r["score"] for r in ranking):
        notes.append("ranked before class calibration existed")
    if any(r.get("deployable") is False for r in ranking):
        notes.append("objective of single distances (pairs not yet deployable)")
    return "; ".join(notes)


def trial_line(name: str, t: FrozenTrial) -> str:
    """One printed line per finished trial."""
    head = f"trial {t.number} [{name}] {settings(t)}"
    if t.state != TrialState.COMPLETE:
        return f"{head}: {t.state.name.lower()} {t.user_attrs.get('pruned', '')}".rstrip()
    m, a = t.user_attrs["metrics"], t.user_attrs
    csid = "n/a" if m["csid_flag_rate"] is None else f"{100 * m['csid_flag_rate']:.2f} %"
    score = f" score={score_label(a)}" if score_label(a) else ""
    far = "" if m.get("far_pass_rate") is None else f" | far-OOD passed {100 * m['far_pass_rate']:.2f} %"
    return (f"{head}{score}: objective {t.value:.4f} | AUROC {100 * m['mean_auroc']:.2f} % | csid flagged {csid}"
            f"{far} | FPR@95 v1.5 {100 * m['fpr95_ood']:.2f} % | {a['seconds_per_image']:.3g} s/image")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Complete trials best first, then pruned and failed ones (with the reason)."""
    rows = []
    for t in ranked(study):
        m, a = t.user_attrs["metrics"], t.user_attrs
        note = trial_note(a)
        rows.append({"trial": t.number, "settings": settings(t), "score": score_label(a),
                     "objective": float(t.value), "AUROC": m["mean_auroc"],
                     **{f"AUROC {s}": v for s, v in m["auroc"].items()}, "FPR csid": m["csid_flag_rate"],
                     **({"far-OOD passed": m["far_pass_rate"]} if m.get("far_pass_rate") is not None else {}),
                     "FPR@95 (OOD-pos, v1.5)": m["fpr95_ood"], "FPR@95 (ID-pos, paper)": m["fpr95_id"],
                     "s / image": a["seconds_per_image"], "note": note})
    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.FAIL)):
        rows.append({"trial": t.number, "settings": settings(t),
                     "note": f"{t.state.name.lower()}: {t.user_attrs.get('pruned', '')}".strip()})
    if not any(r.get("score") for r in rows):
        for r in rows:
            r.pop("score", None)
    return rows


def cost_figure(studies: dict[str, optuna.Study]) -> bytes:
    """Objective against seconds per image (log scale), one colour per study, the chosen trial starred."""
    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, study) in enumerate(sorted(studies.items())):
        trials = ranked(study)
        if not trials:
            continue
        colour = f"C{i % 10}"
        cost = np.array([max(t.user_attrs["seconds_per_image"], 1e-9) for t in trials])
        value = np.array([t.value for t in trials])
        ax.scatter(cost, value, s=18, alpha=0.6, color=colour, label=name)
        ax.scatter(cost[:1], value[:1], s=160, marker="*", color=colour, edgecolors="black", linewidths=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (validation, this machine)")
    ax.set_ylabel("objective (higher is better)")
    ax.set_title("tuning: objective against cost (star = chosen)")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return figure_png(fig)


def _method_entry(cfg: Any, name: str, trial: FrozenTrial) -> dict[str, Any]:
    spec = {k: v for k, v in trial.user_attrs["spec"].items() if v not in (None, "", {}, [])}
    title = next((m.title for m in cfg.methods if m.name == name), name)
    return {**spec, "name": f"{name}-tuned", "display": f"{title} (tuned)"}


def tuned_config(cfg: Any, studies: dict[str, optuna.Study]) -> tuple[dict[str, Any], list[str]]:
    """The source config plus the tuned methods and fusion rules; notes for what a config cannot hold."""

    data = json.loads(json.dumps(config_dict(cfg)))
    notes, methods, fusion = [], [], []
    for name, study in sorted(studies.items()):
        trials = ranked(study)
        if not trials:
            continue
        if not name.startswith(FUSION_PREFIX):
            methods.append(_method_entry(cfg, name, trials[0]))
            continue
        spec = trials[0].user_attrs["spec"]
        rule_keys = [f.name for f in dataclasses.fields(FUSION_RULES.get(spec["rule"])) if f.init]
        rule = FUSION_RULES.get(spec["rule"])(**{k: spec[k] for k in rule_keys if k in spec})  # + the rule's defaults
        fusion.append({**{k: spec[k] for k in ("baseline", "diffguard", "rule")},
                       **{k: getattr(rule, k) for k in rule_keys}})
    data["methods"] = data.get("methods", []) + [_with_fusion_distances(m, fusion) for m in methods]
    tuned_keys = {_fusion_key(f) for f in fusion}  # a tuned entry replaces the source's entry of the same key
    data["fusion"] = [f for f in data.get("fusion", []) if _fusion_key(f) not in tuned_keys] + fusion
    return data, notes


def _fusion_key(entry: dict[str, Any]) -> str:
    """The key a fusion entry gets in a run (:attr:`FusionConfig.key`)."""
    return FusionConfig(**entry).key


def _with_fusion_distances(entry: dict[str, Any], fusion: list[dict[str, Any]]) -> dict[str, Any]:
    """A tuned DiffGuard entry that also computes the distances its tuned fusions read (veto-split's ``veto_by`` /
    ``rank_by``; a tuned spec computes only its chosen score's distances), its score unchanged."""
    wanted = [n for f in fusion if f["diffguard"] == entry["name"] for n in _distances_read(f)]
    cfg = MethodConfig.from_dict(entry)
    if not wanted or not cfg.is_diffguard:
        return entry
    have = tuple(tr.resolved_kwargs(cfg)["distances"])
    extra = tuple(dict.fromkeys(n for n in wanted if n not in have))
    if not extra:
        return entry
    wider = tr.tidy(cfg.with_option("distances", repr(have + extra))).as_dict()
    return {**entry, "params": wider["params"]}


def _distances_read(f: dict[str, Any]) -> list[str]:
    """The distances (``dist:<name>`` columns) the rule of a tuned fusion entry reads."""
    params = {k: v for k, v in f.items() if k not in ("baseline", "diffguard", "rule")}
    return [c[len("dist:"):] for c in create_fusion(f["rule"], **params).diffguard_columns if c.startswith("dist:")]


def write_report(out: Path, cfg: Any, data: ValidationData, objective: Objective, command: str,
                 log: Callable[[str], None] = print) -> Path:
    """Write report.md, objective_vs_cost.png, tuned.yaml and tune.json; print each study's table; returns the
    report path."""
    studies = load_studies(out)
    config, notes = tuned_config(cfg, studies)
    header = [f"# written by diffguard tune; objective: {objective.statement()}",
              f"# reproduce: {command}", f"# evaluate on the test sets: diffguard benchmark {out / 'tuned.yaml'}",
              *[f"# note: {n}" for n in notes]]
    atomic_write_text(out / "tuned.yaml", "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False))
    atomic_write_bytes(out / "objective_vs_cost.png", cost_figure(studies))
    lines = ["# Tuning report", "", f"**Objective.** {objective.statement()}", "",
             "**Validation data** (test sets never opened): " + ", ".join(
                 f"{n} ({data.roles[n]}, {data.size(n)} images)" for n in data.rows), "",
             f"**Covariate-shifted ID:** {data.csid_note}.", "",
             f"**Reproduce:** `{command}`", "", "Chosen settings: `tuned.yaml`; objective against cost: "
             "![objective vs cost](objective_vs_cost.png)", ""]
    summary: dict[str, Any] = {"objective": objective.statement(), "command": command, "studies": {}}
    for name, study in sorted(studies.items()):
        rows, top = trial_rows(study), best(study)
        lines += [f"## {name}", "", _study_line(study, top), ""]
        if rows:
            table = markdown_table(rows[:TABLE_ROWS])
            lines += [table, ""]
            log(f"\n{name}:\n{markdown_table(rows[:10])}")
        if top is not None and top.user_attrs.get("ranking"):
            shown = [{k: v for k, v in r.items() if k != "scales"} for r in top.user_attrs["ranking"]]
            lines += ["Post-hoc scores of the chosen synthesis (`a+b`: sum of robust z-scores with ID-val medians "
                      "and scales, a spec's `score_distance: a+b` with `score_scales`; `|class`: class-calibrated):",
                      "", markdown_table(shown), ""]
        summary["studies"][name] = {"trials": len(study.trials), "best": None if top is None else {
            "number": top.number, "objective": top.value, "params": top.params, "spec": top.user_attrs["spec"],
            "metrics": top.user_attrs["metrics"], "seconds_per_image": top.user_attrs["seconds_per_image"]}}
    lines += [f"Note: {n}" for n in notes]
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=2, default=str))
    report = atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    log(f"tuned config: {out / 'tuned.yaml'}; report: {report}")
    return report


def _study_line(study: optuna.Study, top: FrozenTrial | None) -> str:
    states = [t.state for t in study.trials]
    counts = ", ".join(f"{sum(s == k for s in states)} {k.name.lower()}" for k in TrialState if k in states)
    if top is None:
        return f"No complete trial ({counts})."
    return f"Trials: {counts}. Chosen: trial {top.number}, objective {top.value:.4f}: `{settings(top)}`."
