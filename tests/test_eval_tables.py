"""Score tables (CSV round trip) and metric tables (CSV / JSON / Markdown, atomic writes)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from diffguard import atomic_files as _files
from diffguard.report.tables import ScoreTable, format_cell, markdown_table, write_metric_tables

AWKWARD = [1 / 3, -0.0, 1e-300, 5e-324, np.nextafter(1.0, 2.0), float("nan"), -123456.789e200, 0.1 + 0.2]


def small_table() -> ScoreTable:
    names = np.array(["test", "test", 'near, "odd" set', "near, \"odd\" set", "fär", "test", "fär", "test"])
    return ScoreTable(names, {"test": "id", 'near, "odd" set': "near", "fär": "far"},
                      ids=np.array([5, 2, 9, 0, 1, 3, 4, 7]), labels=np.array([1, 0, -1, -1, -1, 2, -1, 5]),
                      predictions=np.array([1, 3, 0, 2, 4, 2, 1, 5]),
                      scores={"MSP": np.array(AWKWARD), "score, with comma": np.arange(8.0)[::-1] / 7})


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal float64 arrays bit for bit (so -0.0 != 0.0), NaN equal to NaN."""
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64)))


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    table = small_table()
    back = ScoreTable.from_csv(table.to_csv(tmp_path / "scores.csv"))
    assert back.set_names.tolist() == table.set_names.tolist()
    assert back.roles == table.roles and list(back.roles) == list(table.roles)
    for name in ("ids", "labels", "predictions"):
        assert getattr(back, name).dtype == np.int64
        np.testing.assert_array_equal(getattr(back, name), getattr(table, name))
    assert back.methods == ["MSP", "score, with comma"]
    for method in table.methods:
        assert same_bits(back.scores[method], table.scores[method])
    header = (tmp_path / "scores.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == 'set,role,id,label,prediction,score:MSP,"score:score, with comma"'


def test_empty_table_round_trip(tmp_path: Path) -> None:
    table = ScoreTable(np.array([], dtype=str), {}, np.array([], np.int64), np.array([], np.int64),
                       np.array([], np.int64), {"MSP": np.array([])})
    back = ScoreTable.from_csv(table.to_csv(tmp_path / "s.csv"))
    assert len(back) == 0 and back.methods == ["MSP"]


def test_rows_of_and_sets() -> None:
    table = small_table()
    np.testing.assert_array_equal(table.rows_of("test"), [0, 1, 5, 7])
    assert table.sets() == ["test", 'near, "odd" set', "fär"]
    assert table.sets("far") == ["fär"]
    with pytest.raises(KeyError, match="sets in this table"):
        table.rows_of("val")


@pytest.mark.parametrize("change, match", [
    ({"roles": {"test": "id"}}, "no role for sets"),
    ({"roles": {"test": "ood", 'near, "odd" set': "near", "fär": "far"}}, "one of"),
    ({"ids": np.arange(8.0)}, "integer"),
    ({"labels": np.zeros(7, np.int64)}, "7 rows"),
    ({"scores": {"MSP": np.zeros(7)}}, "shape"),
])
def test_bad_table_is_refused(change: dict, match: str) -> None:
    t = small_table()
    fields = {"set_names": t.set_names, "roles": t.roles, "ids": t.ids, "labels": t.labels,
              "predictions": t.predictions, "scores": t.scores} | change
    with pytest.raises(ValueError, match=match):
        ScoreTable(**fields)


def test_from_csv_refuses_malformed(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("set,id,label\n")
    with pytest.raises(ValueError, match="not a score table"):
        ScoreTable.from_csv(path)
    path.write_text("set,role,id,label,prediction,score:a\ntest,id,0,1,1,0.5\ntest,near,1,1,1,0.5\n")
    with pytest.raises(ValueError, match="roles"):
        ScoreTable.from_csv(path)
    path.write_text("set,role,id,label,prediction,score:a\ntest,id,0,1,1\n")
    with pytest.raises(ValueError, match="5 fields"):
        ScoreTable.from_csv(path)


ROWS = [
    {"method": "MSP", "set": "near-fmnist", "group": "near", "AUROC": 0.912345, "FPR@95 (OOD-pos, v1.5)": 0.3,
     "FPR@95 (ID-pos, paper)": np.float64(0.40006), "AUPR-IN": 1.0, "ACC": 0.0},
    {"method": "a|b", "set": "far", "AUROC": float("nan"), "n": np.int64(12), "seconds": 3.14159, "AUPR-OUT": 0.5},
]


def test_markdown_table_format() -> None:
    lines = markdown_table(ROWS).splitlines()
    assert lines[0] == ("| method | set | group | AUROC ↑ | FPR@95 (OOD-pos, v1.5) ↓ | FPR@95 (ID-pos, paper) ↓ "
                        "| AUPR-IN ↑ | ACC ↑ | n | seconds | AUPR-OUT ↑ |")
    assert lines[1] == "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| MSP | near-fmnist | near | 91.23 | 30.00 | 40.01 | 100.00 | 0.00 |  |  |  |"
    assert lines[3] == "| a\\|b | far |  | nan |  |  |  |  | 12 | 3.142 | 50.00 |"
    assert markdown_table(ROWS, columns=["set", "AUROC"]).splitlines()[2] == "| near-fmnist | 91.23 |"
    with pytest.raises(ValueError, match="at least one column"):
        markdown_table([])


def test_format_cell_keeps_text_and_bools() -> None:
    assert format_cell("AUROC", "n/a") == "n/a"
    assert format_cell("flag", True) == "True"
    assert format_cell("AUROC", None) == ""


def test_write_metric_tables(tmp_path: Path) -> None:
    paths = write_metric_tables(ROWS, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv", "metrics.json", "metrics.md"]
    assert set(paths) == {"csv", "json", "md"}
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        got = list(csv.DictReader(handle))
    assert list(got[0]) == ["method", "set", "group", "AUROC", "FPR@95 (OOD-pos, v1.5)", "FPR@95 (ID-pos, paper)",
                            "AUPR-IN", "ACC", "n", "seconds", "AUPR-OUT"]
    assert float(got[0]["FPR@95 (ID-pos, paper)"]) == 0.40006 and float(got[0]["AUROC"]) == 0.912345
    assert got[1]["group"] == "" and got[1]["n"] == "12"
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data[0] == {k: float(v) if isinstance(v, np.floating) else v for k, v in ROWS[0].items()}
    assert data[1]["AUROC"] is None and data[1]["n"] == 12 and list(data[1]) == list(ROWS[1])
    md = paths["md"].read_text(encoding="utf-8")
    assert markdown_table(ROWS) in md and "percent" in md
    write_metric_tables(ROWS[:1], tmp_path / "out", stem="other")
    assert len(list((tmp_path / "out").iterdir())) == 6


def test_atomic_write_failure_keeps_old_file_and_no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.md"
    _files.atomic_write_text(target, "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_metric_tables(ROWS, tmp_path)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.md"]
