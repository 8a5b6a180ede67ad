"""ROC and histogram figures: PNG output, NaN rows left out and counted, errors on bad input."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image
from report_fakes import METHODS, fake_table
from sklearn.metrics import roc_auc_score, roc_curve

from diffguard.report.plots import histogram_figure, roc_curves, roc_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decoded_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return image.size


def test_roc_figure_is_png_and_leaves_backend_alone() -> None:
    backend = matplotlib.get_backend()
    width, height = decoded_size(roc_figure(fake_table(), METHODS, "near-fmnist", "test"))
    assert width > 200 and height > 200
    assert matplotlib.get_backend() == backend


def test_roc_curves_leave_out_nan_rows() -> None:
    table = fake_table()
    curves = {c.method: c for c in roc_curves(table, METHODS, "near-fmnist", "test")}
    assert [c.left_out for c in curves.values()] == [0, 0, 4]  # DiffGuard's first 4 (ID) rows are NaN
    rows = np.concatenate([table.rows_of("test")[4:], table.rows_of("near-fmnist")])
    truth = np.r_[np.zeros(36), np.ones(25)]
    fpr, tpr, _ = roc_curve(truth, table.scores["DiffGuard"][rows])
    np.testing.assert_array_equal(curves["DiffGuard"].fpr, fpr)
    np.testing.assert_array_equal(curves["DiffGuard"].tpr, tpr)
    assert curves["DiffGuard"].auroc == pytest.approx(roc_auc_score(truth, table.scores["DiffGuard"][rows]))
    assert "4 NaN left out" in curves["DiffGuard"].label() and "NaN" not in curves["MSP"].label()


def test_roc_all_nan_method_draws_no_curve() -> None:
    table = fake_table()
    table.scores["DiffGuard"][table.rows_of("far-digits")] = np.nan
    curve = roc_curves(table, ["DiffGuard"], "far-digits", "test")[0]
    assert curve.fpr.size == 0 and np.isnan(curve.auroc) and curve.left_out == 19
    assert "no curve" in curve.label()
    decoded_size(roc_figure(table, ["DiffGuard"], "far-digits", "test"))


def test_roc_bad_input() -> None:
    table = fake_table()
    with pytest.raises(ValueError, match="two different sets"):
        roc_figure(table, METHODS, "test", "test")
    with pytest.raises(KeyError, match="methods in this table"):
        roc_figure(table, ["ViM"], "far-digits", "test")
    with pytest.raises(KeyError, match="sets in this table"):
        roc_figure(table, METHODS, "far-noise", "test")
    table.scores["MSP"][0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        roc_figure(table, ["MSP"], "far-digits", "test")


def test_histogram_figure_with_nan_and_empty() -> None:
    table = fake_table()
    decoded_size(histogram_figure(table, "DiffGuard", "test", ["near-fmnist", "far-digits"]))
    table.scores["Energy"][:] = np.nan
    decoded_size(histogram_figure(table, "Energy", "test", ["far-digits"]))
    table.scores["MSP"][3] = -np.inf
    with pytest.raises(ValueError, match="infinite"):
        histogram_figure(table, "MSP", "test", ["far-digits"])
