"""One self-contained HTML report of a run: metrics table, ROC curves, score histograms, galleries and, when the run
has per-kind covariate-shift sets, their false alarms by corruption kind and severity.

The page needs nothing outside itself: CSS is inline, every image is a base64 PNG data URI, and there is no
JavaScript. The same PNGs are also written under ``<out_dir>/figures/`` for use elsewhere.
"""

from __future__ import annotations

import base64
import json
import os
from html import escape
from pathlib import Path
from typing import Any

from diffguard.atomic_files import atomic_write_bytes, atomic_write_text
from diffguard.report.csid_severity import SeverityTable, severity_rows
from diffguard.report.gallery import GalleryItem, gallery_figure, safe_name
from diffguard.report.plots import csid_severity_figure, histogram_figure, roc_figure
from diffguard.report.tables import ScoreTable, format_cell, header_text, is_number, table_columns

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .3rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; font-family: ui-monospace, monospace; white-space: pre-wrap; }
table#metrics { border-collapse: collapse; font-size: 13px; }
table#metrics th, table#metrics td { border: 1px solid #ccc; padding: .2rem .5rem; }
table#metrics th { background: #f3f3f3; }
table#metrics td.num { text-align: right; font-variant-numeric: tabular-nums; }
table#metrics tbody tr:nth-child(even) { background: #fafafa; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
p.note { color: #666; font-size: 13px; }
"""


_NUM = ' class="num"'


class _Figures:
    """Writes PNGs under ``folder`` with unique file-safe names and renders them as ``<figure>`` HTML."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: set[str] = set()

    def html(self, png: bytes, name: str, caption: str) -> str:
        stem, n = safe_name(name), 1
        while f"{stem}.png" in self.names:
            n += 1
            stem = f"{safe_name(name)}-{n}"
        self.names.add(f"{stem}.png")
        atomic_write_bytes(self.folder / f"{stem}.png", png)
        data = base64.b64encode(png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
                f"<figcaption>{escape(caption)} <code>figures/{escape(stem)}.png</code></figcaption></figure>")


def _meta_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, indent=1, ensure_ascii=False, default=str)
    return str(value)


def _meta_html(meta: dict[str, Any]) -> str:
    if not meta:
        return ""
    items = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(_meta_value(v))}</dd>" for k, v in meta.items())
    return f'<dl class="meta">{items}</dl>'


def metrics_html(rows: list[dict[str, Any]], table_id: str = "metrics") -> str:
    """``rows`` as ``<table id="<table_id>">`` (one ``<tr>`` per row in ``<tbody>``; metrics in percent)."""
    if not rows:
        return '<p class="note">No metric rows.</p>'
    columns = table_columns(rows)
    head = "".join(f"<th>{escape(header_text(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td{_NUM if is_number(row.get(c)) else ''}>{escape(format_cell(c, row.get(c)))}</td>"
                        for c in columns)
        body.append(f"<tr>{cells}</tr>")
    note = '<p class="note">Metric columns in percent; OOD is the positive class; ↑ higher is better, ↓ lower.</p>'
    return (f'{note}<table id="{escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _the_id_set(table: ScoreTable) -> str:
    id_sets = table.sets("id")
    if len(id_sets) != 1:
        raise ValueError(f"write_report needs exactly one set with role 'id' in the table, got {id_sets}")
    return id_sets[0]


def _plots_html(table: ScoreTable, methods: list[str], figures: _Figures) -> tuple[str, str]:
    """(ROC section, histogram section) HTML."""
    id_set = _the_id_set(table)
    ood_sets = [s for s in table.sets() if table.roles[s] != "id"]
    roc = [figures.html(roc_figure(table, methods, s, id_set), f"roc-{id_set}-vs-{s}",
                        f"ROC: {id_set} (ID) vs {s} ({table.roles[s]}-OOD)") for s in ood_sets]
    hist = [figures.html(histogram_figure(table, m, id_set, ood_sets), f"hist-{m}", f"Scores of {m}")
            for m in methods]
    empty = '<p class="note">No OOD set in the table.</p>'
    return ("".join(roc) or empty), ("".join(hist) or empty)


def _galleries_html(galleries: dict[str, list[GalleryItem]], figures: _Figures) -> str:
    parts = []
    for caption, items in galleries.items():
        if items:
            parts.append(figures.html(gallery_figure(items, caption), f"gallery-{caption}", caption))
        else:
            parts.append(f'<p class="note">{escape(caption)}: no samples.</p>')
    return "".join(parts) or '<p class="note">No galleries.</p>'


def _csid_html(tables: list[SeverityTable], figures: _Figures) -> str:
    """The per-kind covariate-shift section: one table and one plot per split (test: ``csid_severity.png``)."""
    parts = []
    for table in tables:
        stem = "csid_severity" if table.split == "test" else f"csid_severity-{table.split}"
        caption = f"Covariate-shifted ID {table.split} images flagged by kind and severity"
        parts.append(f"<h3>{escape(table.split.capitalize())} sets</h3>"
                     + metrics_html(severity_rows(table), f"csid-{table.split}")
                     + f'<div class="figures">{figures.html(csid_severity_figure(table), stem, caption)}</div>')
    return "".join(parts)


def write_report(out_dir: str | os.PathLike[str], *, title: str, metrics: list[dict[str, Any]], table: ScoreTable,
                 methods: list[str], galleries: dict[str, list[GalleryItem]], meta: dict[str, Any],
                 summary: list[dict[str, Any]] | None = None, csid: list[SeverityTable] | None = None) -> Path:
    """Write ``<out_dir>/report.html``, one self-contained page, and its PNGs under ``<out_dir>/figures/``.

    Args:
        out_dir: results folder (created if missing).
        title: page title and heading.
        metrics: metric rows as given to :func:`diffguard.report.tables.write_metric_tables` (fractions in [0, 1]).
        table: per-sample scores; exactly one set must have role ``"id"``; every other set gets a ROC figure.
        methods: methods to plot (keys of ``table.scores``): one curve each per ROC figure, one histogram each.
        galleries: caption (e.g. ``"DiffGuard / near-fmnist, most OOD"``) -> items; an empty list is noted.
        meta: shown as a definition list (command, machine, wall time, models, seeds, ...); values are shown
            with ``str`` (lists joined by commas, dicts as JSON).
        summary: optional short rows (e.g. one per method) shown first as ``<table id="summary">``.
        csid: per-kind covariate-shift tables (:func:`~diffguard.report.csid_severity.severity_tables`); when
            given and not empty, a section with each table and its plot (``figures/csid_severity.png`` for the test
            sets).
    Returns:
        The path of ``report.html``.
    """
    out = Path(out_dir)
    figures = _Figures(out / "figures")
    roc, hist = _plots_html(table, methods, figures)
    sections = [("Summary", metrics_html(summary, "summary"))] if summary else []
    sections += [
        ("Metrics", metrics_html(metrics)),
        ("ROC curves", f'<div class="figures">{roc}</div>'),
        ("Score histograms", f'<div class="figures">{hist}</div>'),
        ("Galleries: input / synthesis", f'<div class="figures">{_galleries_html(galleries, figures)}</div>'),
    ]
    if csid:
        sections.insert(-1, ("Covariate shift by corruption kind and severity", _csid_html(csid, figures)))
    body = "".join(f"<section><h2>{escape(name)}</h2>{html}</section>" for name, html in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body><header><h1>{escape(title)}</h1>"
            f"{_meta_html(meta)}</header>\n{body}\n</body></html>\n")
    return atomic_write_text(out / "report.html", page)
