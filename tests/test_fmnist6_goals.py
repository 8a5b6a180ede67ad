"""scripts/fmnist6_goals.py: issue 13's goal checks on a run's metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_modules import load_script


@pytest.fixture(scope="module")
def goals_module():
    return load_script("scripts/fmnist6_goals.py")


def _rows(key: str, near: float, far: tuple[float, float], fpr: float, flagged: float) -> list[dict]:
    out = [{"key": key, "set": "near", "group": "near", "AUROC": near}]
    out += [{"key": key, "set": f"far-{i}", "group": "far", "AUROC": a} for i, a in enumerate(far)]
    out += [{"key": key, "set": "far", "group": "far", "AUROC": sum(far) / 2},
            {"key": key, "set": "all", "group": "all", "AUROC": near,
             "FPR@95 (OOD-pos, v1.5)": fpr, "FPR@95 (ID-pos, paper)": fpr},
            {"key": key, "set": "test-csid", "group": "csid", "csid flagged": flagged}]
    return out


def _folder(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "metrics.json").write_text(json.dumps(rows))
    methods = [{"name": "mds", "method": "mds"}, {"name": "vim", "method": "vim"},
               {"name": "dg", "method": "diffguard"}, {"name": "or", "method": "diffguard"}]
    (tmp_path / "run_config.json").write_text(json.dumps({"methods": methods}))
    return tmp_path


def test_goals_pass_and_fail_where_they_should(goals_module, tmp_path: Path) -> None:
    rows = (_rows("mds", 0.81, (0.99, 0.99), 0.18, 0.08) + _rows("vim", 0.79, (0.99, 0.99), 0.17, 0.08)
            + _rows("dg", 0.80, (0.97, 0.89), 0.30, 0.09) + _rows("or", 0.96, (0.9, 0.9), 0.3, 0.05)
            + _rows("dg+mds:weighted", 0.825, (0.99, 0.99), 0.17, 0.03)
            + _rows("dg+vim", 0.80, (0.99, 0.99), 0.16, 0.05))
    m, methods, named = goals_module.load(_folder(tmp_path, rows))
    assert named is None  # no `recommended` in this run config: the caller's default applies
    got = {g: ok for g, _, _, ok in goals_module.goals(m, methods, "dg", "or", "dg+vim")}
    assert got["DiffGuard alone, near AUROC >= best baseline (mds)"] is False  # 80 < 81
    assert got["dg+mds:weighted: near AUROC >= mds + 1"] is True  # 82.5 >= 82
    assert got["dg+mds:weighted: FPR@95 (OOD-pos, v1.5) (all OOD) <= mds's"] is True
    assert not any("dg+vim: near AUROC >= mds" in g for g in got)  # only fusions with the best baseline
    assert got["DiffGuard alone, far-0 AUROC > 90"] and not got["DiffGuard alone, far-1 AUROC > 90"]
    assert got["DiffGuard alone, far AUROC >= 95"] is False  # mean 93
    assert got["oracle labels, near AUROC >= 95"] is True
    assert got["recommended (dg+vim): test-csid flagged <= 10 %"] is True
    assert got["dg+mds:weighted: test-csid flagged <= half of mds's"] is True  # 3 <= 4
    assert got["dg+vim: test-csid flagged <= half of vim's"] is False  # 5 > 4
    assert got["dg+vim: near AUROC >= vim's - 1"] is True
    assert got["recommended (dg+vim): near AUROC >= mds + 1"] is False  # 80 < 82
    assert got["recommended: FPR@95 (OOD-pos, v1.5) (all OOD) <= mds's"] is True  # 16 <= 18
    assert got["recommended: far AUROC >= 99"] is True


def test_recommended_goals_read_the_run_config_and_every_kind(goals_module, tmp_path: Path) -> None:
    rows = (_rows("mds", 0.81, (0.99, 0.99), 0.18, 0.08) + _rows("dg", 0.80, (0.97, 0.89), 0.30, 0.09)
            + _rows("dg+mds:veto", 0.83, (0.995, 0.995), 0.17, 0.05))
    rows += [{"key": "dg+mds:veto", "set": f"test-csid-{k}-{v}", "group": "csid", "csid flagged": f}
             for k, v, f in (("noise", 1, 0.06), ("noise", 2, 0.12), ("noise", 3, 0.5), ("blur", 2, 0.05))]
    folder = _folder(tmp_path, rows)
    config = json.loads((folder / "run_config.json").read_text())
    (folder / "run_config.json").write_text(json.dumps({**config, "recommended": "dg+mds:veto"}))
    m, methods, named = goals_module.load(folder)
    assert named == "dg+mds:veto"
    got = {g: ok for g, _, _, ok in goals_module.recommended_goals(m, "mds", named)}
    assert got["recommended (dg+mds:veto): near AUROC >= mds + 1"] is True  # 83 >= 82
    assert got["recommended: test-csid-noise-1 flagged <= 10 %"] and got["recommended: test-csid-blur-2 flagged <= 10 %"]
    assert got["recommended: test-csid-noise-2 flagged <= 10 %"] is False
    assert not any("noise-3" in g for g in got)  # severity 3 is reported, not a goal
