"""scripts/compare_metrics.py: the rows two runs share, compared value by value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_modules import load_script


@pytest.fixture(scope="module")
def cmp_module():
    return load_script("scripts/compare_metrics.py")


def _folder(path: Path, rows: list[dict]) -> Path:
    path.mkdir()
    (path / "metrics.json").write_text(json.dumps(rows))
    return path


def test_shared_rows_are_compared_and_a_difference_fails(cmp_module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    a = _folder(tmp_path / "a", [{"key": "dg", "set": "near", "AUROC": 0.7792, "ACC": 0.96},
                                 {"key": "vim", "set": "near", "AUROC": 0.78},
                                 {"key": "only-a", "set": "near", "AUROC": 0.5}])
    b = _folder(tmp_path / "b", [{"key": "dg", "set": "near", "AUROC": 0.7792, "ACC": 0.96},
                                 {"key": "vim", "set": "near", "AUROC": 0.79}])
    n, values, diffs = cmp_module.compare(cmp_module.rows(a), cmp_module.rows(b))
    assert (n, values) == (2, 3) and diffs == [("vim", "near", "AUROC", 0.78, 0.79)]
    assert cmp_module.compare(cmp_module.rows(a), cmp_module.rows(b), {"dg"})[2] == []
    monkeypatch.setattr("sys.argv", ["compare_metrics.py", str(a), str(b)])
    with pytest.raises(SystemExit) as stop:
        cmp_module.main()
    assert stop.value.code == 1 and "2 shared rows, 3 values compared, 1 differ" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not found"):
        cmp_module.rows(tmp_path / "missing")
