"""Result tables: per-sample scores (:class:`ScoreTable`) and metric rows exported to CSV, JSON and Markdown.

Conventions: OOD label = -1; scores are higher = more OOD; NaN marks a row a method did not score. Floats are
written with ``repr`` (the shortest text that reads back to the same float64), so CSV round trips are exact.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffguard.atomic_files import atomic_write_text

ROLES = ("id", "near", "far")
SCORE_PREFIX = "score:"
_FIXED_COLUMNS = ("set", "role", "id", "label", "prediction")
# Metric column prefixes (case-insensitive) and whether higher is better ("csid flagged": the share of
# covariate-shifted ID images a method flags as OOD, see diffguard.evaluation.evaluate_run; "far-OOD passed": the
# share of far-OOD validation images at or below the threshold, see diffguard.tune.objective).
_METRIC_DIRECTIONS = (("AUROC", "↑"), ("AUPR", "↑"), ("ACC", "↑"), ("FPR", "↓"), ("CSID FLAGGED", "↓"),
                      ("FAR-OOD PASSED", "↓"))


def _int_array(name: str, value: Any, n: int | None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(f"ScoreTable.{name} must be a 1-D integer array, got dtype {array.dtype} shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"ScoreTable.{name} has {array.shape[0]} rows, set_names has {n}")
    return array.astype(np.int64, copy=False)


@dataclass
class ScoreTable:
    """Per-sample results of one run, one row per image.

    Attributes:
        set_names: str (N,), the set of each row (e.g. ``"test"``, ``"near-fmnist"``).
        roles: set name -> ``"id"`` | ``"near"`` | ``"far"``; the in-distribution test set has role ``"id"``.
        ids: int64 (N,), the index of each image in its set's source (stable across runs).
        labels: int64 (N,), the true class, -1 for OOD.
        predictions: int64 (N,), the classifier's predicted class.
        scores: method name -> float64 (N,), higher = more OOD, NaN where the method did not score the row.
    """

    set_names: np.ndarray
    roles: dict[str, str]
    ids: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    scores: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.set_names = np.asarray(self.set_names, dtype=str)
        if self.set_names.ndim != 1:
            raise ValueError(f"ScoreTable.set_names must be 1-D, got shape {self.set_names.shape}")
        n = self.set_names.shape[0]
        self.ids = _int_array("ids", self.ids, n)
        self.labels = _int_array("labels", self.labels, n)
        self.predictions = _int_array("predictions", self.predictions, n)
        bad = {k: v for k, v in self.roles.items() if v not in ROLES}
        if bad:
            raise ValueError(f"ScoreTable.roles must map each set to one of {ROLES}, got {bad}")
        missing = sorted(set(self.set_names.tolist()) - set(self.roles))
        if missing:
            raise ValueError(f"ScoreTable.roles has no role for sets {missing}; add them as 'id', 'near' or 'far'")
        scores = {}
        for method, values in self.scores.items():
            array = np.asarray(values)
            if array.shape != (n,) or array.dtype.kind not in "fiu":
                raise ValueError(f"ScoreTable.scores[{method!r}] must be a real array of shape ({n},), "
                                 f"got dtype {array.dtype} shape {array.shape}")
            scores[str(method)] = array.astype(np.float64, copy=False)
        self.scores = scores

    def __len__(self) -> int:
        return int(self.set_names.shape[0])

    @property
    def methods(self) -> list[str]:
        """Method names in insertion order."""
        return list(self.scores)

    def sets(self, role: str | None = None) -> list[str]:
        """Set names present in the rows, in order of first appearance; only those with ``role`` when given."""
        _, first = np.unique(self.set_names, return_index=True)
        names = [str(self.set_names[i]) for i in sorted(first)]
        return [s for s in names if role is None or self.roles[s] == role]

    def rows_of(self, set_name: str) -> np.ndarray:
        """Row indices (int64, ascending) of ``set_name``. Raises ``KeyError`` naming the known sets if absent."""
        rows = np.flatnonzero(self.set_names == set_name)
        if rows.size == 0:
            raise KeyError(f"no rows for set {set_name!r}; sets in this table: {self.sets()}")
        return rows.astype(np.int64)

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as CSV (atomically). Columns: set, role, id, label, prediction, ``score:<method>``...

        Scores are written with ``repr`` (exact float64 round trip); NaN is written as ``nan``.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*_FIXED_COLUMNS, *(SCORE_PREFIX + m for m in self.scores)])
        columns = [self.scores[m].tolist() for m in self.scores]
        for i in range(len(self)):
            name = str(self.set_names[i])
            writer.writerow([name, self.roles[name], int(self.ids[i]), int(self.labels[i]),
                             int(self.predictions[i]), *(repr(float(c[i])) for c in columns)])
        return atomic_write_text(path, buffer.getvalue())

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> ScoreTable:
        """Read a table written by :meth:`to_csv`. Raises ``ValueError`` on a malformed file."""
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header[:5]) != _FIXED_COLUMNS:
                raise ValueError(f"{path}: not a score table; the header must start with {list(_FIXED_COLUMNS)}")
            methods = [h[len(SCORE_PREFIX):] for h in header[5:]]
            if any(not h.startswith(SCORE_PREFIX) for h in header[5:]):
                raise ValueError(f"{path}: columns after 'prediction' must be named '{SCORE_PREFIX}<method>'")
            rows = list(reader)
        roles: dict[str, str] = {}
        for line, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
            if roles.setdefault(row[0], row[1]) != row[1]:
                raise ValueError(f"{path}:{line}: set {row[0]!r} has roles {roles[row[0]]!r} and {row[1]!r}")
        cells = list(zip(*rows)) if rows else [()] * len(header)
        return cls(
            set_names=np.asarray(cells[0], dtype=str),
            roles=roles,
            ids=np.asarray([int(v) for v in cells[2]], dtype=np.int64),
            labels=np.asarray([int(v) for v in cells[3]], dtype=np.int64),
            predictions=np.asarray([int(v) for v in cells[4]], dtype=np.int64),
            scores={m: np.asarray([float(v) for v in cells[5 + j]], dtype=np.float64) for j, m in enumerate(methods)},
        )


# ----------------------------------------------------------------------------------------------- metric tables


def metric_direction(column: str) -> str | None:
    """``"↑"`` for AUROC / AUPR* / ACC columns, ``"↓"`` for FPR*, csid-flagged and far-OOD-passed columns, ``None``
    for any other column."""
    upper = column.upper()
    for prefix, arrow in _METRIC_DIRECTIONS:
        if upper.startswith(prefix):
            return arrow
    return None


def is_number(value: Any) -> bool:
    """True for int / float values (numpy scalars included), False for bools and everything else."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def format_cell(column: str, value: Any) -> str:
    """Text of one metric-table cell: metric columns (see :func:`metric_direction`) as percentages with 2 decimals
    (0.91234 -> ``"91.23"``), other floats with 4 significant digits, missing values as ``""``."""
    if value is None:
        return ""
    if is_number(value):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if metric_direction(column) is not None:
            return f"{100.0 * number:.2f}"
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        return f"{number:.4g}"
    return str(value)


def table_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """All keys of ``rows`` in order of first appearance."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def header_text(column: str) -> str:
    """Column header with its direction arrow, e.g. ``"AUROC ↑"``, ``"FPR@95 (OOD-pos, v1.5) ↓"``."""
    arrow = metric_direction(column)
    return f"{column} {arrow}" if arrow else column


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (metric columns in percent, arrows in headers).

    Args:
        rows: one dict per table row; missing keys give empty cells.
        columns: the columns to show, in order; default: all keys in order of first appearance.
    Returns:
        The table text, one line per row, ending with a newline.
    """
    columns = table_columns(rows) if columns is None else list(columns)
    if not columns:
        raise ValueError("markdown_table needs at least one column; rows are empty and no columns were given")

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    numeric = [any(is_number(r.get(c)) for r in rows) for c in columns]
    out = [line(header_text(c) for c in columns),
           "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    out += [line(format_cell(c, r.get(c)) for c in columns) for r in rows]
    return "\n".join(out) + "\n"


def _plain(value: Any) -> Any:
    """JSON-ready value: numpy scalars -> Python, non-finite floats -> ``None`` (strict JSON has no NaN)."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def write_metric_tables(rows: list[dict[str, Any]], out_dir: str | os.PathLike[str],
                        stem: str = "metrics") -> dict[str, Path]:
    """Write metric rows as ``<stem>.csv``, ``<stem>.json`` and ``<stem>.md`` in ``out_dir`` (atomic writes).

    Args:
        rows: one dict per (method, set) row, e.g. ``{"method": "MSP", "set": "near-fmnist", "group": "near",
            "AUROC": 0.91, "FPR@95 (OOD-pos, v1.5)": 0.3, ...}``; metric values are fractions in [0, 1].
            Columns keep the order of first appearance.
        out_dir: the folder (created if missing).
        stem: file name without suffix.
    Returns:
        ``{"csv": path, "json": path, "md": path}``. CSV floats use ``repr`` (exact); JSON keeps the rows as given
        (numpy scalars converted; NaN/inf written as ``null``); Markdown shows metrics in percent (2 decimals).
    """
    out = Path(out_dir)
    columns = table_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(row.get(c)) for c in columns] for row in rows)
    note = "Metric columns in percent (OOD is the positive class); ↑ higher is better, ↓ lower is better.\n\n"
    body = markdown_table(rows, columns) if columns else "(no rows)\n"
    return {
        "csv": atomic_write_text(out / f"{stem}.csv", buffer.getvalue()),
        "json": atomic_write_text(out / f"{stem}.json",
                                  json.dumps(_plain(rows), indent=2, ensure_ascii=False, allow_nan=False) + "\n"),
        "md": atomic_write_text(out / f"{stem}.md", note + body),
    }
