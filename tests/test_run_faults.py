"""Preflight checks, `diffguard report` merging folders, and bit-identical repeated runs (CLI, in process)."""

from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path

import pytest
import yaml

from diffguard.cli import main
from diffguard.run.preflight import MIN_FREE_BYTES, PreflightError, preflight
from test_runner import tiny_config


def _bench(cfg: dict, tmp_path: Path, out: Path, data_root: Path, *extra: str) -> int:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    return main(["benchmark", str(cfg_file), "--out", str(out), "--data-root", str(data_root), "--no-progress",
                 *extra])


def _msp_config(tiny_models: tuple[Path, Path]) -> dict:
    cfg = tiny_config(tiny_models, limit=3, val_limit=3, train_limit=8)
    cfg["methods"], cfg["fusion"] = [{"name": "msp"}, {"name": "ebo"}], []
    return cfg


def test_preflight_accepts_and_creates_folder(tmp_path: Path) -> None:
    assert preflight(tmp_path / "new" / "out").is_dir()


def test_preflight_refuses_a_file_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(PreflightError, match=r"f is an existing file"):
        preflight(tmp_path / "f")
    with pytest.raises(PreflightError, match="cannot create results folder"):
        preflight(tmp_path / "f" / "sub")


def test_preflight_refuses_unwritable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:  # root ignores permission bits: then only the access check below is exercised
        folder.chmod(0o500)
        try:
            with pytest.raises(PreflightError, match=f"{folder}.* not writable"):
                preflight(folder)
        finally:
            folder.chmod(0o700)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != folder)
    with pytest.raises(PreflightError, match=f"results folder {folder} is not writable"):
        preflight(folder)


def test_preflight_refuses_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(PreflightError, match=f"MiB free on the disk of results folder {tmp_path}"):
        preflight(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, MIN_FREE_BYTES))
    assert preflight(tmp_path) == tmp_path


def test_benchmark_cli_reports_preflight_error(tmp_path: Path, tiny_models: tuple[Path, Path],
                                               fake_fmnist_root: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "taken").write_text("x")
    assert _bench(_msp_config(tiny_models), tmp_path, tmp_path / "taken", fake_fmnist_root) == 2
    assert "is an existing file" in capsys.readouterr().err


@pytest.mark.slow
def test_same_command_twice_is_bit_identical(tmp_path: Path, tiny_models: tuple[Path, Path],
                                             fake_fmnist_root: Path) -> None:
    cfg = _msp_config(tiny_models)
    cfg["methods"].append({"name": "dg", "kind": "diffguard", "preset": "fmnist6-cfg",
                           "overrides": ["inversion.steps=4", "inversion.cap=2"]})
    cfg["limit"] = 2
    for out in ("a", "b"):
        assert _bench(cfg, tmp_path, tmp_path / out, fake_fmnist_root, "--threads", "1") == 0
    for name in ("scores.csv", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.slow
def test_report_merges_folders_of_one_configuration(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                    fake_fmnist_root: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _msp_config(tiny_models)
    assert _bench(cfg, tmp_path, tmp_path / "all", fake_fmnist_root) == 0
    capsys.readouterr()
    assert _bench(cfg, tmp_path, tmp_path / "a", fake_fmnist_root, "--methods", "msp") == 0
    out = capsys.readouterr().out
    assert "not requested by --methods (run them with --methods ebo): ['ebo']" in out and "incomplete" not in out
    assert _bench(cfg, tmp_path, tmp_path / "b", fake_fmnist_root, "--methods", "ebo") == 0
    assert '"ebo"' not in (tmp_path / "a" / "metrics.json").read_text()  # incomplete before the merge
    assert (tmp_path / "a" / "scores.csv").read_bytes() != (tmp_path / "all" / "scores.csv").read_bytes()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    for name in ("scores.csv", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "all" / name).read_bytes(), name
    extra = {**cfg, "methods": [{"name": "mls"}]}
    assert _bench(extra, tmp_path, tmp_path / "x", fake_fmnist_root) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "x")]) == 0
    assert "not reported: ['mls']" in capsys.readouterr().out
    other = {**cfg, "limit": 2}
    assert _bench(other, tmp_path, tmp_path / "c", fake_fmnist_root) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "differs in: ['limit']" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2
    assert "has no results.sqlite" in capsys.readouterr().err
