"""``diffguard seeds DIR DIR ...``: mean ± std of the metrics over runs that differ only in ``--seed``."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffguard.evaluation.seed_spread import aggregate, check_same_plan, read_run, summary_rows
from diffguard.report.tables import markdown_table, write_metric_tables


def add(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("seeds", help="mean ± std of the metrics over runs that differ only in --seed")
    m.add_argument("results", nargs="+", help="results folders of `diffguard benchmark ... --seed S`, two or more")
    m.add_argument("--out", default=None, help="folder for seeds.{csv,json,md} (default: <first folder>-seeds)")
    m.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folders = [Path(f) for f in args.results]
    runs = [read_run(f) for f in folders]
    names = [str(f) for f in folders]
    check_same_plan([c for c, _ in runs], names)
    rows = aggregate([r for _, r in runs], names)
    out = Path(args.out) if args.out else folders[0].with_name(folders[0].name + "-seeds")
    out.mkdir(parents=True, exist_ok=True)
    write_metric_tables(rows, out, stem="seeds")
    summary = markdown_table(summary_rows(rows))
    (out / "seeds-summary.md").write_text(f"# Mean ± std over {len(runs)} runs: {', '.join(names)}\n\n{summary}")
    print(summary)
    print(f"mean ± std (population std) over {len(runs)} runs; all rows: {out / 'seeds.md'}")
    return 0
