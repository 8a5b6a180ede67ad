"""scripts/fmnist6_results_table.py: the README's results tables from a run's metrics.json and summary.json."""

from __future__ import annotations

import pytest

from script_modules import load_script


@pytest.fixture(scope="module")
def table_module():
    return load_script("scripts/fmnist6_results_table.py")


def _rows(key: str, title: str, near: float, flagged: dict[str, float]) -> list[dict]:
    fpr = {"FPR@95 (OOD-pos, v1.5)": 0.2, "FPR@95 (ID-pos, paper)": 0.25}
    out = [{"key": key, "method": title, "set": g, "group": g, "AUROC": a, **fpr}
           for g, a in (("near", near), ("far", 0.99), ("all", 0.9))]
    out += [{"key": key, "method": title, "set": s, "group": "csid", "csid flagged": f, "ACC": 0.9}
            for s, f in flagged.items()]
    return out


FLAGS = {"test-csid": 0.07, "test-csid-noise-1": 0.06, "test-csid-noise-2": 0.31, "test-csid-noise-3": 0.6,
         "test-csid-blur-1": 0.05, "test-csid-blur-2": 0.08, "val-csid-noise-2": 0.9}


def test_main_table_rows_mark_the_recommended_and_name_the_worst_mild_kind(table_module) -> None:
    metrics = _rows("vim", "ViM", 0.79, FLAGS) + _rows("dg+vim:veto-split", "DG + ViM", 0.8, {
        **FLAGS, "test-csid-noise-2": 0.04})
    summary = [{"method": "ViM", "s / image": 4e-6}, {"method": "DG + ViM", "s / image": 0.32}]
    text = table_module.main_table(metrics, summary, ["vim", "dg+vim:veto-split"], "dg+vim:veto-split")
    lines = text.splitlines()
    assert lines[2] == "| ViM | 79.00 | 99.00 | 90.00 | 20.00 | 25.00 | 7.00 | 31.00 (noise 2) | 4e-06 |"
    # severity 3 and validation sets are not "mild test" kinds: the worst of the rest is blur 2
    assert lines[3] == ("| **DG + ViM** (recommended) | 80.00 | 99.00 | 90.00 | 20.00 | 25.00 | 7.00 | 8.00 (blur 2) "
                        "| 0.32 |")
    with pytest.raises(SystemExit, match="no metric rows for 'mds'"):
        table_module.main_table(metrics, summary, ["mds"], None)


def test_kinds_table_is_the_test_part_of_csid_md_for_the_chosen_rows(table_module) -> None:
    metrics = _rows("vim", "ViM", 0.79, FLAGS) + _rows("mds", "MDS", 0.8, FLAGS)
    text = table_module.kinds_table(metrics, ["mds"], {"val-csid-noise-2"})
    lines = text.splitlines()
    assert lines[0] == "| method | noise 1 | noise 2 | noise 3 | blur 1 | blur 2 |"
    assert lines[2] == "| MDS | 6.00 | 31.00 | 60.00 | 5.00 | 8.00 |"
    assert lines[3].startswith("| classifier ACC | 90.00") and len(lines) == 4
