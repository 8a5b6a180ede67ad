"""Report figures as PNG bytes: ROC curves, score histograms and covariate-shift false alarms by severity.

Figures are drawn on a :class:`matplotlib.figure.Figure` with its own Agg canvas, never through ``pyplot``, so
nothing here changes matplotlib's global backend or state and no window is ever opened. OOD is the positive class.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from diffguard.report.csid_severity import CLEAN_RATE, SeverityTable
from diffguard.report.tables import ScoreTable

DPI = 110
_MAX_BINS = 60


def figure_png(fig: Figure) -> bytes:
    """Render ``fig`` with the Agg canvas and return the PNG bytes (no timestamp or version metadata)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _check_method(table: ScoreTable, method: str) -> np.ndarray:
    if method not in table.scores:
        raise KeyError(f"no scores for method {method!r}; methods in this table: {table.methods}")
    return table.scores[method]


def _check_finite(method: str, scores: np.ndarray) -> None:
    if np.isinf(scores).any():
        raise ValueError(f"method {method!r} has infinite scores; scores must be finite, or NaN where not scored")


def _nan_note(count: int) -> str:
    return f", {count} NaN left out" if count else ""


@dataclass(frozen=True)
class RocCurve:
    """One method's ROC curve: fpr, tpr float64 (K,) from :func:`sklearn.metrics.roc_curve` (empty when either set
    has no scored row), ``auroc`` in [0, 1] (NaN without a curve) and ``left_out``, the rows with a NaN score."""

    method: str
    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float
    left_out: int

    def label(self) -> str:
        """Legend text, e.g. ``"MSP (AUROC 91.23%, 5 NaN left out)"``."""
        if self.fpr.size == 0:
            return f"{self.method}: no curve (a set has no scores{_nan_note(self.left_out)})"
        return f"{self.method} (AUROC {100 * self.auroc:.2f}%{_nan_note(self.left_out)})"


def roc_curves(table: ScoreTable, methods: list[str], ood_set: str, id_set: str) -> list[RocCurve]:
    """ROC curves of ``methods`` separating ``id_set`` (negative) from ``ood_set`` (positive, OOD).

    Scores are higher = more OOD. Rows whose score is NaN for a method are left out of that method's curve and
    counted in :attr:`RocCurve.left_out`.

    Raises:
        KeyError: unknown method or set. ValueError: the two sets are the same, or a score is +-inf.
    """
    if ood_set == id_set:
        raise ValueError(f"an ROC curve needs two different sets, got {id_set!r} twice")
    id_rows, ood_rows = table.rows_of(id_set), table.rows_of(ood_set)
    rows = np.concatenate([id_rows, ood_rows])
    truth = np.concatenate([np.zeros(len(id_rows)), np.ones(len(ood_rows))])
    curves = []
    for method in methods:
        scores = _check_method(table, method)[rows]
        _check_finite(method, scores)
        keep = ~np.isnan(scores)
        left_out = int((~keep).sum())
        if len(np.unique(truth[keep])) < 2:
            curves.append(RocCurve(method, np.empty(0), np.empty(0), float("nan"), left_out))
            continue
        fpr, tpr, _ = roc_curve(truth[keep], scores[keep])
        curves.append(RocCurve(method, fpr, tpr, float(auc(fpr, tpr)), left_out))
    return curves


def roc_figure(table: ScoreTable, methods: list[str], ood_set: str, id_set: str) -> bytes:
    """PNG of the :func:`roc_curves` of ``methods`` (``id_set`` negative, ``ood_set`` positive), one line each,
    with AUROC and the number of NaN rows left out in the legend.

    Raises:
        KeyError: unknown method or set. ValueError: the two sets are the same, or a score is +-inf.
    """
    curves = roc_curves(table, methods, ood_set, id_set)
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    for curve in curves:
        ax.plot(curve.fpr, curve.tpr, lw=1.6, label=curve.label())
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=f"FPR: ID ({id_set}) flagged as OOD",
           ylabel=f"TPR: OOD ({ood_set}) caught", title=f"ROC, {id_set} vs {ood_set} (OOD positive)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return figure_png(fig)


def histogram_figure(table: ScoreTable, method: str, id_set: str, ood_sets: list[str]) -> bytes:
    """Overlaid, density-normalised score histograms of ``method`` on ``id_set`` and each of ``ood_sets``.

    All sets share one set of bins (from the pooled scores). NaN scores are left out, counted in the legend.

    Returns:
        PNG bytes.
    Raises:
        KeyError: unknown method or set. ValueError: a score is +-inf.
    """
    scores = _check_method(table, method)
    per_set = [(name, scores[table.rows_of(name)]) for name in [id_set, *ood_sets]]
    for _, values in per_set:
        _check_finite(method, values)
    pooled = np.concatenate([v[np.isfinite(v)] for _, v in per_set])
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.add_subplot()
    if pooled.size == 0:
        ax.text(0.5, 0.5, f"{method}: no finite scores", ha="center", va="center", transform=ax.transAxes)
    else:
        edges = np.histogram_bin_edges(pooled, bins="auto")
        if len(edges) - 1 > _MAX_BINS:
            edges = np.histogram_bin_edges(pooled, bins=_MAX_BINS)
        for name, values in per_set:
            finite = values[np.isfinite(values)]
            label = f"{name} ({table.roles[name]}, n={finite.size}{_nan_note(int(np.isnan(values).sum()))})"
            if finite.size:
                ax.hist(finite, bins=edges, density=True, histtype="step", lw=1.6, label=label)
            else:
                ax.plot([], [], label=label)
        ax.legend(fontsize="small")
    ax.set(xlabel=f"{method} score (higher = more OOD)", ylabel="density", title=f"Score histogram: {method}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def _method_style(i: int) -> dict[str, object]:
    """Colour (tab20, then again with a dashed-dotted line) and marker of the i-th method's line."""
    colors = matplotlib.colormaps["tab20"].colors
    return {"color": colors[i % len(colors)], "ls": "-" if i < len(colors) else "-.", "marker": "o", "ms": 3.5}


def csid_severity_figure(table: SeverityTable) -> bytes:
    """PNG: share of covariate-shifted ID images flagged (%) against severity, one panel per corruption kind, one
    line per method, the clean rate (ID-val's 5 %) dashed.

    Args:
        table: one split's shares (:func:`diffguard.report.csid_severity.severity_tables`).
    """
    kinds = table.kinds
    fig = Figure(figsize=(2.4 * len(kinds) + 2.6, 3.4), layout="constrained")
    axes = fig.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        sevs = table.severities(kind)
        for i, (method, got) in enumerate(table.flagged.items()):
            ax.plot(sevs, [100 * got.get((kind, s), np.nan) for s in sevs], lw=1.3, label=method, **_method_style(i))
        ax.axhline(100 * CLEAN_RATE, color="0.4", ls="--", lw=1, label=f"clean rate ({100 * CLEAN_RATE:.0f} %)")
        ax.set(title=kind, xlabel="severity", xticks=sevs)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel(f"flagged (%), {table.split} sets")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="x-small")
    fig.suptitle("Covariate-shifted ID images flagged at the 95 %-TPR threshold", fontsize="medium")
    return figure_png(fig)
