"""Turn a results store into metrics and outputs: per-set metrics, near / far means, "DiffGuard + X" fusion,
score thresholds, and the results folder (scores.csv, metrics.{csv,json,md}, figures, galleries, report.html).

Conventions: OOD is the positive class and every score is an OOD score (higher = more OOD). Each OOD test set
(roles ``near``, ``far``) is compared with the ID test set; group rows ("near", "far", "all") are unweighted means
over the sets of the group. A set named like a group row (a user set called ``near``, ``far``, ``all`` or
``val_ood``) has its row named ``set:<name>`` (:func:`~diffguard.bench.definitions.metric_row_name`), so set and
group rows never collide. A benchmark without OOD test sets (ID and csid sets only) has no AUROC rows: its csid rows
and thresholds are what it reports. Validation and covariate-shift sets never enter those rows nor the ID-test metrics:

* OOD validation (role ``val_ood``): each set is compared with ID-val (group ``val_ood``, one row per set and, with
  two or more sets, their unweighted mean, row ``val_ood``); these are the numbers tuning may optimise;
* covariate-shifted ID (roles ``val_csid``, validation, and ``csid``, test): known classes that a detector should
  not flag. Each such set's row (group ``csid``) holds ``csid flagged``, the share of its images scoring above the
  method's threshold (the 95th percentile of its ID-val scores, kept in thresholds.json; ID-val itself is flagged at
  5 %, the clean rate), and ``ACC``, the classifier's accuracy on the set. The summary shows the mean over the test
  (``csid``) sets and over the validation (``val_csid``) sets.

A method missing scores for some planned rows is reported as incomplete and left out of the tables.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib.figure
import numpy as np

from diffguard.bench.definitions import CSID_ROLES, metric_row_name
from diffguard.detectors.fusion import diffguard_input
from diffguard.evaluation.ood_metrics import accuracy, compute_metrics, summarize
from diffguard.evaluation.stored_calibration import calibrated, fitted_calibration, stored_labels
from diffguard.evaluation.validation_rows import TPR, csid_accuracy, csid_columns, shift_rows, threshold_at_tpr
from diffguard.report.csid_severity import severity_tables, write_csid_table
from diffguard.report.gallery import GalleryItem, pick_extremes, to_uint8
from diffguard.report.html_report import write_report
from diffguard.report.plots import figure_png
from diffguard.report.tables import ScoreTable, markdown_table, write_metric_tables
from diffguard.run.run_config import fusion_title
from diffguard.run.runner import Runner
from diffguard.run.store import ResultStore


@dataclass
class Evaluation:
    """Metric rows (one per method and OOD set plus group means), the score table and bookkeeping."""

    rows: list[dict[str, Any]]
    table: Any  # diffguard.report.tables.ScoreTable
    complete: list[str]
    incomplete: dict[str, int]
    fusion: list[dict[str, Any]]
    thresholds: dict[str, float]  # row key (method or fusion) -> score threshold keeping 95 % of ID-val
    cost: dict[str, float] = dataclasses.field(default_factory=dict)  # row key -> compute seconds per image
    titles: dict[str, str] = dataclasses.field(default_factory=dict)  # row key -> display title, table order


def role_sets(runner: Runner, *roles: str) -> list[str]:
    """The run's scored sets with one of ``roles``, in benchmark order."""
    return [n for n in runner.eval_sets() if runner.spec.get(n).role in roles]


def test_sets(runner: Runner) -> list[str]:
    """The ID test set and the OOD test sets (roles id, near, far; not train / val / val_ood / val_csid / csid)."""
    return role_sets(runner, "id", "near", "far")


def planned_scores(runner: Runner, store: ResultStore, method: str, name: str) -> np.ndarray:
    """(N,) a method's scores of the planned rows of set ``name``, in plan order; NaN where missing."""
    return store.scores(method, name, planned_ids(runner, name))


def ood_groups(runner: Runner) -> dict[str, list[str]]:
    """OOD set names by group: "near" and "far" (only those with sets), then "all" (every OOD test set, in
    benchmark order); no group at all when the run has no OOD test set. Group metrics are unweighted means over
    these sets."""
    ood = [n for n in test_sets(runner) if n != runner.spec.test_set]
    groups = {g: [n for n in ood if runner.spec.get(n).role == g] for g in ("near", "far")}
    return {**{g: v for g, v in groups.items() if v}, "all": ood} if ood else {}


def score_table(runner: Runner, store: ResultStore, methods: list[str]) -> Any:
    """Every test / OOD row of the run with every method's score (NaN where missing)."""

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("set", "ids", "labels", "pred")}
    scores: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for name in test_sets(runner):
        src, rows = runner.sources[name], runner.plan[name]
        ids = src.ids[rows].numpy()
        sid, lab, pred = store.samples(name)
        lookup = dict(zip(sid.tolist(), zip(lab.tolist(), pred.tolist())))
        parts["set"].append(np.full(len(ids), name, dtype=object))
        parts["ids"].append(ids)
        parts["labels"].append(np.array([lookup.get(int(i), (-2, -2))[0] for i in ids], dtype=np.int64))
        parts["pred"].append(np.array([lookup.get(int(i), (-2, -2))[1] for i in ids], dtype=np.int64))
        for m in methods:
            scores[m].append(store.scores(m, name, ids))
    roles = {n: runner.spec.get(n).role for n in test_sets(runner)}
    return ScoreTable(set_names=np.concatenate(parts["set"]).astype(str), roles=roles,
                      ids=np.concatenate(parts["ids"]), labels=np.concatenate(parts["labels"]),
                      predictions=np.concatenate(parts["pred"]),
                      scores={m: np.concatenate(v) for m, v in scores.items()})


def planned_ids(runner: Runner, name: str) -> np.ndarray:
    return runner.sources[name].ids[runner.plan[name]].numpy()


def _calibrate(runner: Runner, store: ResultStore, method: str, table: Any, val: str,
               val_scores: dict[str, np.ndarray], shifted: dict[str, np.ndarray]) -> None:
    """Replace a method's raw scores by calibrated ones, in place, when its spec asks for a calibration (fitted
    on its complete ID-val scores; an incomplete method is left as it is)."""

    spec = runner.cfg.method(method)
    raw = val_scores[method]
    if spec.calibration is None or np.isnan(raw).any():
        return
    labels = stored_labels(store, method, val, planned_ids(runner, val))
    cal = fitted_calibration(spec, raw, labels)
    val_scores[method] = calibrated(cal, raw, labels)
    for n in shifted:
        shifted[n] = calibrated(cal, shifted[n], stored_labels(store, method, n, planned_ids(runner, n)))
    scores = table.scores[method]
    for n in np.unique(table.set_names):
        sel = table.set_names == n
        scores[sel] = calibrated(cal, scores[sel], stored_labels(store, method, n, table.ids[sel]))


def _metric_rows(method: str, title: str, id_scores: np.ndarray, ood: dict[str, np.ndarray],
                 groups: dict[str, list[str]], acc: float, extra: dict[str, Any] | None = None) -> list[dict]:
    """One row per OOD set (named by :func:`metric_row_name`) and one per group; none without OOD sets."""
    if not ood:
        return []
    per_set = {metric_row_name(name): compute_metrics(id_scores, s) for name, s in ood.items()}
    groups = {g: [metric_row_name(n) for n in sets] for g, sets in groups.items()}
    summary = summarize(per_set, groups)
    rows = []
    for name, metrics in summary.items():
        group = next((g for g, sets in groups.items() if name in sets), name)
        rows.append({"method": title, "key": method, "set": name, "group": group, **metrics, "ACC": acc,
                     **(extra or {})})
    return rows


def evaluate(runner: Runner, store: ResultStore) -> Evaluation:
    """Metrics for every complete method and every fusion of the config: OOD test sets against ID-test,
    OOD-validation sets against ID-val, csid sets flagged at the 95 %-TPR thresholds from ID-val."""

    names = [m.name for m in runner.cfg.methods]
    table = score_table(runner, store, names)
    test = runner.spec.test_set
    val = runner.spec.by_role("val")[0].name
    val_scores = {m: planned_scores(runner, store, m, val) for m in names}
    shift = role_sets(runner, "val_ood", *CSID_ROLES)  # validation OOD and covariate-shifted ID sets
    roles = {n: runner.spec.get(n).role for n in shift}
    shifted = {m: {n: planned_scores(runner, store, m, n) for n in shift} for m in names}
    for m in names:
        _calibrate(runner, store, m, table, val, val_scores, shifted[m])
    groups = ood_groups(runner)
    ood_sets = groups.get("all", [])
    is_test = table.set_names == test
    acc = accuracy(table.labels[is_test], table.predictions[is_test])
    csid_acc = csid_accuracy(store, [n for n in shift if roles[n] in CSID_ROLES])
    sel = {n: table.set_names == n for n in [test, *ood_sets]}
    missing = {m: int(np.isnan(table.scores[m]).sum() + np.isnan(val_scores[m]).sum()
                      + sum(int(np.isnan(v).sum()) for v in shifted[m].values())) for m in names}
    incomplete = {m: n for m, n in missing.items() if n}
    complete = [m for m in names if m not in incomplete]
    rows, thresholds, titles = [], {}, {}
    cost = {m: store.seconds_per_image(m) for m in complete}
    for m in complete:
        s, title = table.scores[m], runner.cfg.method(m).title
        titles[m], thresholds[m] = title, threshold_at_tpr(val_scores[m])
        rows += _metric_rows(m, title, s[sel[test]], {n: s[sel[n]] for n in ood_sets}, groups, acc)
        rows += shift_rows(m, title, val_scores[m], shifted[m], roles, csid_acc, thresholds[m])
    fusion_info = []
    for f in runner.cfg.fusion:  # both parts are methods of the config (checked before the run)
        if f.baseline not in complete or f.diffguard not in complete:
            continue  # a part not run (yet) is reported as incomplete or skipped
        b = table.scores[f.baseline]
        fuse = f.build()
        d = fusion_columns(runner, store, f.diffguard, fuse.diffguard_columns, table, sel, val_scores, shifted)
        fuse.fit(val_scores[f.baseline], diffguard_input(fuse, d[val]))
        title = fusion_title(runner.cfg, f)
        key = f.key
        titles[key] = title
        fused = {n: fuse.fuse(b[sel[n]], diffguard_input(fuse, d[n])) for n in [test, *ood_sets]}
        fused_val = fuse.fuse(val_scores[f.baseline], diffguard_input(fuse, d[val]))
        fused_shift = {n: fuse.fuse(shifted[f.baseline][n], diffguard_input(fuse, d[n])) for n in shift}
        fusion_info.append({"fusion": title, **fuse.report()})
        cost[key] = cost[f.diffguard] + cost[f.baseline]
        thresholds[key] = threshold_at_tpr(fused_val)
        rows += _metric_rows(key, title, fused[test], {n: fused[n] for n in ood_sets}, groups, acc,
                             {"fusion": f.describe()})
        rows += shift_rows(key, title, fused_val, fused_shift, roles, csid_acc, thresholds[key])
    return Evaluation(rows, table, complete, incomplete, fusion_info, thresholds, cost, titles)


def fusion_columns(runner: Runner, store: ResultStore, method: str, columns: Sequence[str], table: Any,
                   sel: dict[str, np.ndarray], val_scores: dict[str, np.ndarray],
                   shifted: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Set name -> {column: (N,)} of the DiffGuard columns a fusion reads, for the test / OOD sets (rows ``sel`` of
    the score table), ID-val and the shift sets: ``"score"`` as evaluated (calibrated when the spec asks), a stored
    distance column (``dist:<name>``, raw) read for the same rows."""
    val = runner.spec.by_role("val")[0].name
    rows = {**{n: table.ids[m] for n, m in sel.items()}, **{n: planned_ids(runner, n) for n in [val, *shifted[method]]}}
    score = {**{n: table.scores[method][m] for n, m in sel.items()}, val: val_scores[method], **shifted[method]}
    return {n: {c: score[n] if c == "score" else store.scores(method, n, ids, key=c) for c in columns}
            for n, ids in rows.items()}


def gallery_items(runner: Runner, store: ResultStore, table: Any, method: str, k: int) -> dict[str, list[Any]]:
    """For each eval set: the k most and k least OOD-looking input / synthesis pairs of a DiffGuard method."""

    out = {}
    for name in test_sets(runner):
        most, least = pick_extremes(table, method, name, k)
        src = runner.sources[name]
        pos = {int(i): r for r, i in enumerate(src.ids.tolist())}
        items = []
        for sid in [*most, *least]:
            synth = store.image(method, name, int(sid))
            if synth is None:
                continue
            x = to_uint8(src.load([pos[int(sid)]]))[0]
            row = np.flatnonzero((table.set_names == name) & (table.ids == sid))[0]
            items.append(GalleryItem(set=name, id=int(sid), score=float(table.scores[method][row]), input=x,
                                     synthesis=synth, label=int(table.labels[row]),
                                     prediction=int(table.predictions[row])))
        out[f"{runner.cfg.method(method).title} / {name}"] = items
    return out


def write_outputs(runner: Runner, store: ResultStore, ev: Evaluation, meta: dict[str, Any]) -> Path:
    """scores.csv, metrics.{csv,json,md}, summary.{csv,json,md} (one row per method, the report's summary table),
    thresholds.json, manifest.json and report.html in the run folder, and csid.md (with figures/csid_severity.png in
    the report) when the run has per-kind csid sets."""

    out = runner.out
    ev.table.to_csv(out / "scores.csv")
    write_metric_tables(ev.rows, out)
    summary = summary_rows(runner, ev)
    write_metric_tables(summary, out, stem="summary")
    (out / "thresholds.json").write_text(json.dumps({"tpr": TPR, "split": "val", "thresholds": ev.thresholds,
                                                     "fusion": ev.fusion}, indent=2))
    (out / "manifest.json").write_text(json.dumps(meta, indent=2, default=str))
    if runner.cfg.ablation:
        write_ablation(runner, ev, out, meta)
    csid = severity_tables(ev.rows, val_csid_rows(runner))  # sets named *-csid-<kind>-<severity>, if any
    write_csid_table(csid, out)
    dg = [m.name for m in runner.cfg.methods if m.is_diffguard and m.name in ev.complete]
    galleries: dict[str, list[Any]] = {}
    for m in dg:
        galleries.update(gallery_items(runner, store, ev.table, m, runner.cfg.gallery))
    return write_report(out, title=f"diffguard benchmark: {runner.spec.name}", metrics=ev.rows, table=ev.table,
                        methods=ev.complete, galleries=galleries, meta=report_meta(meta),
                        summary=summary, csid=csid)


def report_meta(manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest in a few readable lines for the report header (manifest.json keeps everything)."""
    v = manifest.get("versions", {})
    models = manifest.get("config", {}).get("models", {})
    out = {"command": manifest.get("command", ""), "machine": manifest.get("machine", ""),
           "versions": ", ".join(f"{k} {v[k]}" for k in ("diffguard", "torch", "diffusers", "piq") if k in v),
           "model hashes (sha256)": "; ".join(f"{k} {', '.join(h[:12] for h in hs)}" for k, hs in models.items()),
           "data hash (sha256)": str(manifest.get("data") or "")[:12],
           "compute seconds per method": ", ".join(f"{k} {v_}" for k, v_ in manifest.get("compute_seconds",
                                                                                      {}).items())}
    if manifest.get("wall_seconds_this_invocation") is not None:
        out["wall seconds (this invocation)"] = str(manifest["wall_seconds_this_invocation"])
    for key in ("incomplete", "skipped"):
        if manifest.get(key):
            out[key] = "; ".join(f"{k}: {v_}" for k, v_ in manifest[key].items())
    return out


def summary_rows(runner: Runner, ev: Evaluation) -> list[dict[str, Any]]:
    """One row per method (fusions included): AUROC per group, both FPR@95 over all OOD sets, AUROC of ID-val
    against OOD-val, the share of csid images flagged (test and validation csid sets), and the method's own compute
    seconds per image (the shared classifier pass excluded; a fusion counts both of its methods)."""
    rows = []
    val_csid = val_csid_rows(runner)
    for key, title in ev.titles.items():
        got = {r["set"]: r for r in ev.rows if r["key"] == key}
        rows.append(_group_row("method", title, got, ev.cost.get(key), val_csid))
    return rows


def val_csid_rows(runner: Runner) -> list[str]:
    """The metric row names of the run's covariate-shifted ID validation sets (role ``val_csid``)."""
    return [metric_row_name(n) for n in role_sets(runner, "val_csid")]


def _group_row(label_key: str, label: str, got: dict[str, dict[str, Any]], seconds: float | None = None,
               val_csid: Sequence[str] = ()) -> dict[str, Any]:
    """AUROC of each group row present in ``got`` (set -> metric row), both FPR@95 of the "all" row (when the run
    has OOD test sets), the AUROC of ID-val against OOD-val, the mean share flagged of the test csid sets and of the
    validation ones (``val_csid``: their row names; those present) and, when given, the compute seconds per
    image."""
    row: dict[str, Any] = {label_key: label}
    for g in ("near", "far", "all"):
        if g in got:
            row[f"AUROC {g}"] = got[g]["AUROC"]
    for c in ABLATION_COLUMNS[1:] if "all" in got else ():
        row[f"{c} all"] = got["all"][c]
    row.update(csid_columns(got, val_csid))
    if seconds is not None:
        row["s / image"] = seconds
    return row


ABLATION_COLUMNS = ("AUROC", "FPR@95 (OOD-pos, v1.5)", "FPR@95 (ID-pos, paper)")


def ablation_rows(runner: Runner, ev: Evaluation) -> list[dict[str, Any]]:
    """One row per variant (method, in config order): AUROC per group and both FPR@95 over all OOD sets."""
    rows = []
    val_csid = val_csid_rows(runner)
    for m in runner.cfg.methods:
        got = {r["set"]: r for r in ev.rows if r["key"] == m.name}
        if got:
            rows.append(_group_row(runner.cfg.ablation or "variant", m.title, got, ev.cost.get(m.name), val_csid))
    return rows


def write_ablation(runner: Runner, ev: Evaluation, out: Path, meta: dict[str, Any] | None = None) -> None:
    """ablation.md (table, then how it was made: images per set, command, machine) and ablation.png (AUROC per
    variant, one line per group)."""

    rows = ablation_rows(runner, ev)
    sizes = ", ".join(f"{n} {len(runner.plan[n])}" for n in runner.eval_sets())
    made = [f"Images per set: {sizes}. `s / image`: each variant's own compute seconds per scored image."]
    if meta:
        made.append(f"Command: `{meta.get('command', '')}`. Machine: {meta.get('machine', '')}.")
    (out / "ablation.md").write_text(f"# Ablation: {runner.cfg.ablation}\n\n{markdown_table(rows)}\n"
                                     + "\n".join(made) + "\n")

    fig = matplotlib.figure.Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    label = runner.cfg.ablation or "variant"
    names = [r[label] for r in rows]
    for g in ("near", "far", "all"):
        key = f"AUROC {g}"
        if rows and key in rows[0]:
            ax.plot(range(len(rows)), [100 * r[key] for r in rows], marker="o", label=f"{g}-OOD mean")
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("AUROC (%)")
    ax.set_title(f"fmnist6 ablation: {label}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    (out / "ablation.png").write_bytes(figure_png(fig))
