"""Covariate-shift false alarms by corruption kind and severity: the data of ``csid.md`` and of the plot
``figures/csid_severity.png``.

A covariate-shifted ID set named ``<anything>-csid-<kind>-<severity>`` (fmnist6's ``test-csid-noise-2``, ...) is
read by name for this grouping only: its kind and severity give its column. Whether it is validation or test data is
decided by its role, which the caller passes (``validation``: the metric row names of the ``val_csid`` sets). A run
without such sets has no table (:func:`severity_tables` returns none and :func:`write_csid_table` writes nothing).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffguard.atomic_files import atomic_write_text

CSID_KIND_SET = re.compile(r"^.+-csid-(?P<kind>[a-z0-9]+)-(?P<severity>[1-9][0-9]*)$")
FLAGGED = "csid flagged"  # the metric rows' column (diffguard.evaluation.validation_rows.CSID_FLAGGED)
CLEAN_RATE = 0.05  # ID-val is flagged at this share by construction (the 95 %-TPR threshold)
ACC_ROW = "classifier ACC"
Column = tuple[str, int]


def kind_and_severity(set_name: str) -> Column | None:
    """(kind, severity) of a set named ``*-csid-<kind>-<severity>``, e.g. ``("noise", 2)``; None for any other."""
    match = CSID_KIND_SET.match(set_name)
    return (match["kind"], int(match["severity"])) if match else None


@dataclass(frozen=True)
class SeverityTable:
    """Shares flagged of one split (``"test"`` or ``"validation"``) by method and (kind, severity).

    Attributes:
        split: ``"test"`` (role ``csid``) or ``"validation"`` (role ``val_csid``).
        columns: (kind, severity) pairs present, kinds in order of first appearance, severities ascending.
        flagged: method title -> column -> share flagged in [0, 1] (the mean over the sets of that column, when
            several sets share a kind and severity).
        accuracy: column -> the classifier's accuracy on its sets, in [0, 1].
    """

    split: str
    columns: tuple[Column, ...]
    flagged: dict[str, dict[Column, float]]
    accuracy: dict[Column, float]

    @property
    def kinds(self) -> list[str]:
        """The corruption kinds, in column order."""
        return list(dict.fromkeys(k for k, _ in self.columns))

    def severities(self, kind: str) -> list[int]:
        """The severities of ``kind`` present, ascending."""
        return [s for k, s in self.columns if k == kind]


def _column(set_name: str) -> Column:
    """:func:`kind_and_severity` of a set known to be per-kind (ValueError otherwise)."""
    col = kind_and_severity(set_name)
    if col is None:
        raise ValueError(f"set {set_name!r} is not named *-csid-<kind>-<severity>")
    return col


def _table(split: str, rows: list[dict[str, Any]]) -> SeverityTable:
    """The table of one split from its metric rows (each of a per-kind set)."""
    kinds = list(dict.fromkeys(_column(r["set"])[0] for r in rows))
    columns = tuple(sorted({_column(r["set"]) for r in rows}, key=lambda c: (kinds.index(c[0]), c[1])))
    flagged: dict[str, dict[Column, list[float]]] = {}
    accuracy: dict[Column, list[float]] = {}
    for r in rows:
        col = _column(r["set"])
        flagged.setdefault(r["method"], {}).setdefault(col, []).append(float(r[FLAGGED]))
        if r.get("ACC") is not None:
            accuracy.setdefault(col, []).append(float(r["ACC"]))
    return SeverityTable(split, columns, {m: {c: float(np.mean(v)) for c, v in got.items()} for m, got in
                                          flagged.items()}, {c: float(np.mean(v)) for c, v in accuracy.items()})


def severity_tables(rows: Iterable[dict[str, Any]], validation: Collection[str] = ()) -> list[SeverityTable]:
    """The per-kind tables of a run's metric rows: the ``csid`` group rows of sets named ``*-csid-<kind>-<sev>``,
    test sets first, then validation sets (``validation``: their row names); a split without such sets has none.

    A set's accuracy (``ACC``) is the classifier's, the same in every method's row."""
    picked = [r for r in rows if r.get("group") == "csid" and kind_and_severity(str(r["set"]))]
    out = []
    for split, keep in (("test", lambda n: n not in validation), ("validation", lambda n: n in validation)):
        mine = [r for r in picked if keep(r["set"])]
        if mine:
            out.append(_table(split, mine))
    return out


def _cells(table: SeverityTable, values: dict[Column, float]) -> dict[str, str]:
    """``"<kind> <severity>"`` -> ``values`` in percent (2 decimals), empty where missing, in column order."""
    return {f"{k} {s}": (f"{100 * values[(k, s)]:.2f}" if (k, s) in values else "") for k, s in table.columns}


def severity_rows(table: SeverityTable) -> list[dict[str, Any]]:
    """The table's rows as text: ``method``, then ``"<kind> <severity>"`` -> share flagged in percent (2 decimals,
    empty where a method has no such set); the last row, :data:`ACC_ROW`, holds the classifier's accuracy."""
    rows = [{"method": m, **_cells(table, got)} for m, got in table.flagged.items()]
    return rows + [{"method": ACC_ROW, **_cells(table, table.accuracy)}]


def _markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of text rows (same keys), the first column left-aligned, the others right-aligned."""
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    columns = list(rows[0])
    head = [line(columns), "|---|" + "---:|" * (len(columns) - 1)]
    return "\n".join(head + [line(str(r[c]) for c in columns) for r in rows]) + "\n"


def severity_markdown(tables: list[SeverityTable]) -> str:
    """``csid.md``: a heading, what the numbers are, and one Markdown table per split (a row per method, a column
    per kind and severity, shares flagged in percent; the last row is the classifier's accuracy)."""
    parts = ["# Covariate-shifted ID images flagged, by corruption kind and severity\n",
             "Share (%) of each covariate-shifted ID set that a method flags as OOD at its 95 %-TPR threshold (the "
             f"95th percentile of its ID-val scores, so ID-val itself is flagged at {100 * CLEAN_RATE:.0f} %, the "
             "clean rate); lower is better. Column `<kind> <severity>`: the sets named `*-csid-<kind>-<severity>` "
             f"(severity 1 mildest). Row `{ACC_ROW}`: the classifier's accuracy (%) on each set.\n"]
    for table in tables:
        role = "csid" if table.split == "test" else "val_csid"
        parts.append(f"## {table.split.capitalize()} sets (role {role})\n\n{_markdown(severity_rows(table))}")
    return "\n".join(parts)


def write_csid_table(tables: list[SeverityTable], out_dir: str | Path) -> Path | None:
    """Write ``<out_dir>/csid.md`` (:func:`severity_markdown`) when there is a table; None (nothing written)
    otherwise."""
    if not tables:
        return None
    return atomic_write_text(Path(out_dir) / "csid.md", severity_markdown(tables))
