"""Print the README's fmnist6 results tables from the committed files of a finished run.

Usage: ``python scripts/fmnist6_results_table.py docs/results/fmnist6 [--rows KEY,KEY,...] [--kinds KEY,...]``.

Reads ``metrics.json`` (one row per method and set), ``summary.json`` (one row per method: compute seconds per
image) and ``run_config.json`` (the ``recommended`` key and the per-kind validation sets), all written by
``diffguard benchmark`` / ``diffguard report``. Prints two Markdown tables and nothing else is computed here:

1. one row per method (``--rows``; default: the baselines, DiffGuard alone and with oracle labels, and the fusions
   of ViM and MDS): AUROC near / far / all, both FPR@95 over all OOD sets, the share of the mixed ``test-csid`` set
   flagged, the worst per-kind test csid set of severity 1-2 (the set named), and the method's own seconds per image;
2. per-kind false alarms (``--kinds`` rows): the test part of the run's ``csid.md`` (share flagged per corruption
   kind and severity, the last row the classifier's accuracy), from the same library function.

The recommended detector's row is marked. Values are the files' fractions in percent, 2 decimals.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from diffguard.report.csid_severity import severity_rows, severity_tables

DEFAULT_ROWS = ("msp", "ebo", "knn-tuned", "odin-tuned", "vim", "vim-tuned", "mds", "diffguard-tuned",
                "diffguard-tuned-oracle", "diffguard-tuned+vim-tuned", "diffguard-tuned+mds:weighted",
                "diffguard-tuned+vim-tuned:veto", "diffguard-tuned+mds:veto", "diffguard-tuned+vim-tuned:veto-split",
                "diffguard-tuned+mds:veto-split")
DEFAULT_KINDS = ("vim-tuned", "mds", "knn-tuned", "diffguard-tuned", "diffguard-tuned+vim-tuned",
                 "diffguard-tuned+vim-tuned:veto", "diffguard-tuned+vim-tuned:veto-split")
FPRS = ("FPR@95 (OOD-pos, v1.5)", "FPR@95 (ID-pos, paper)")
MILD = re.compile(r"^test-csid-[a-z0-9]+-[12]$")


def pct(v: Any) -> str:
    """A fraction in percent with 2 decimals; empty for a missing value."""
    return "" if v is None else f"{100 * float(v):.2f}"


def worst_mild_kind(rows: dict[str, dict[str, Any]]) -> str:
    """``"<share> (<kind> <severity>)"``: the per-kind test csid set of severity 1 or 2 this method flags most."""
    mild = {s: r["csid flagged"] for s, r in rows.items() if MILD.match(s)}
    if not mild:
        return ""
    name = max(mild, key=mild.__getitem__)
    kind, sev = name.split("-")[-2:]
    return f"{pct(mild[name])} ({kind} {sev})"


def main_table(metrics: list[dict[str, Any]], summary: list[dict[str, Any]], keys: list[str],
               recommended: str | None) -> str:
    """Table 1 (see the module docstring) as Markdown."""
    by_key: dict[str, dict[str, dict[str, Any]]] = {}
    for r in metrics:
        by_key.setdefault(r["key"], {})[r["set"]] = r
    cost = {r["method"]: r.get("s / image") for r in summary}
    head = ("| method | AUROC near | AUROC far | AUROC all | " + " | ".join(FPRS)
            + " | test-csid | worst kind, sev 1-2 | s / image |")
    lines = [head, "|---|" + "---:|" * 8]
    for key in keys:
        if key not in by_key:
            raise SystemExit(f"no metric rows for {key!r}; keys in this run: {', '.join(sorted(by_key))}")
        got = by_key[key]
        title = next(iter(got.values()))["method"]
        title = f"**{title}** (recommended)" if key == recommended else title
        seconds = cost.get(next(iter(got.values()))["method"])
        cells = [pct(got[g]["AUROC"]) for g in ("near", "far", "all")] + [pct(got["all"][c]) for c in FPRS]
        cells += [pct(got.get("test-csid", {}).get("csid flagged")), worst_mild_kind(got),
                  "" if seconds is None else f"{seconds:.2g}"]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def kinds_table(metrics: list[dict[str, Any]], keys: list[str], validation: set[str]) -> str:
    """Table 2 (see the module docstring) as Markdown: csid.md's test table, restricted to ``keys``."""
    titles = {r["key"]: r["method"] for r in metrics}
    missing = [k for k in keys if k not in titles]
    if missing:
        raise SystemExit(f"no metric rows for {', '.join(missing)}")
    tables = [t for t in severity_tables(metrics, validation) if t.split == "test"]
    if not tables:
        return "(this run has no per-kind csid test sets)\n"
    rows = severity_rows(tables[0])
    keep = [titles[k] for k in keys] + [rows[-1]["method"]]
    picked = sorted((r for r in rows if r["method"] in keep), key=lambda r: keep.index(r["method"]))
    columns = list(picked[0])
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in picked]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a finished run folder (metrics.json, summary.json, run_config.json)")
    ap.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="row keys of table 1, comma-separated")
    ap.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help="row keys of table 2, comma-separated")
    args = ap.parse_args()
    metrics = json.loads((args.folder / "metrics.json").read_text())
    summary = json.loads((args.folder / "summary.json").read_text())
    config = json.loads((args.folder / "run_config.json").read_text())
    validation = {r["set"] for r in metrics if r["set"].startswith("val-csid-")}
    print(main_table(metrics, summary, args.rows.split(","), config.get("recommended")))
    print(kinds_table(metrics, args.kinds.split(","), validation))


if __name__ == "__main__":
    main()
