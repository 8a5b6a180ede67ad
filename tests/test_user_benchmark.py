"""User benchmarks defined in YAML: roles, labels, ids and shapes of their sets, clear errors, and the definition's
round trip through a run's ``run_config.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from diffguard.errors import ConfigError
from diffguard.bench.open_sets import open_benchmark, resolve_benchmark
from diffguard.bench.image_sources import DataError, ImageFolderSource
from diffguard.run.run_config import build_run_config, config_dict, load_run_config
from diffguard.bench.user_yaml import benchmark_dict, benchmark_from_dict, load_benchmark_file
from user_data import CLASSES, make_shapes


@pytest.fixture()
def shapes(tmp_path: Path) -> Path:
    return make_shapes(tmp_path / "bench")


def _definition(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_definition_gives_roles_labels_ids_and_shapes(shapes: Path) -> None:
    spec = load_benchmark_file(shapes)
    assert (spec.name, spec.num_classes, spec.image_size, spec.channels, spec.source) == ("shapes", 3, 16, 3, "user")
    assert spec.class_names == CLASSES and spec.test_set == "test"
    assert {s.name: s.role for s in spec.sets} == {"train": "train", "val": "val", "test": "id", "dim": "csid",
                                                  "val-ood": "val_ood", "lines": "near", "noise": "far"}
    assert all(Path(s.folder or s.list_path).is_absolute() for s in spec.sets)
    src = open_benchmark(spec)
    # class folders give labels (sorted paths: circle/00..07, square/..., triangle/...); README.txt is ignored
    assert src["train"].labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert src["train"].paths[0] == "circle/00.png" and torch.equal(src["train"].ids, torch.arange(24))
    assert src["test"].labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert src["dim"].labels.min() >= 0
    for name, n in (("val-ood", 2), ("lines", 3), ("noise", 3)):  # OOD: any layout, labels -1
        assert src[name].labels.tolist() == [-1] * n
    assert src["lines"].paths == ["1.png", "2.png", "sub/0.png"]
    x = src["train"].load([0, 8, 23])
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert x[0, 0].max() > x[0, 2].max()  # a red circle
    assert resolve_benchmark(str(shapes)) == spec


def test_val_csid_is_a_role_of_its_own(shapes: Path) -> None:
    """role: val_csid is read as written (covariate-shifted ID validation), its folder may leave classes out like a
    csid folder's, and it survives the definition's round trip."""
    d = _definition(shapes)
    d["sets"].append({"name": "val-dim", "role": "val_csid", "folder": "data/dim"})
    shutil.rmtree(shapes.parent / "data" / "dim" / "square")
    spec = benchmark_from_dict(d, shapes.parent)
    assert spec.get("val-dim").role == "val_csid" and not spec.get("val-dim").ood
    assert benchmark_from_dict(benchmark_dict(spec)) == spec
    src = open_benchmark(spec, None, ["val-dim", "dim"])
    assert sorted(set(src["val-dim"].labels.tolist())) == [0, 2] and torch.equal(src["val-dim"].labels,
                                                                                 src["dim"].labels)


def test_relative_paths_start_at_the_yaml_folder(shapes: Path, tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_benchmark_file("../bench/shapes.yaml")
    assert spec.get("train").folder == str(shapes.parent / "data" / "train")
    assert spec.get("test").image_dir == str(shapes.parent / "data")


def test_grey_images_and_folder_source(shapes: Path) -> None:
    src = ImageFolderSource("train", shapes.parent / "data" / "train", 8, 1, CLASSES)
    assert src.load([0, 1]).shape == (2, 1, 8, 8) and len(src) == 24


@pytest.mark.parametrize("change, error, match", [
    (lambda root, d: shutil.rmtree(root / "data" / "val" / "square"), DataError, "no images for class.*square"),
    (lambda root, d: [p.unlink() for p in (root / "data" / "noise").rglob("*.png")], DataError, "no image files"),
    (lambda root, d: (root / "data" / "val" / "hexagon").mkdir(), DataError, "'hexagon'.*not classes"),
    (lambda root, d: shutil.copy(root / "data" / "val" / "circle" / "00.png", root / "data" / "val"), DataError,
     "not in a class sub-folder"),
    (lambda root, d: shutil.rmtree(root / "data" / "lines"), DataError, "missing:\n.*lines"),
])
def test_unusable_folders_are_refused(shapes: Path, change, error, match) -> None:
    change(shapes.parent, None)
    with pytest.raises(error, match=match):
        open_benchmark(load_benchmark_file(shapes))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["sets"][0].update(role="ood"), "role 'ood' is not one of train, val, val_ood, val_csid, id, csid"),
    (lambda d: d["sets"][0].update(list="x.txt"), "either 'folder"),
    (lambda d: d["sets"][2].pop("root"), "'list' needs 'root'"),
    (lambda d: d.update(channels=2), "'channels' must be 1"),
    (lambda d: d.update(classes=["a"]), "at least two distinct"),
    (lambda d: d.update(colour=1), r"unknown key\(s\) \['colour'\]"),
    (lambda d: d["sets"][1].update(role="id"), "only one set may have role 'id'"),
    (lambda d: d["sets"].append({"name": "train", "role": "far", "folder": "x"}), "repeated: \\['train'\\]"),
])
def test_invalid_definitions_are_refused(shapes: Path, edit, match) -> None:
    d = _definition(shapes)
    edit(d)
    with pytest.raises(ConfigError, match=match):
        benchmark_from_dict(d, shapes.parent)


def test_roles_a_run_needs(shapes: Path) -> None:
    d = _definition(shapes)
    d["sets"] = [s for s in d["sets"] if s["role"] != "val"]
    with pytest.raises(ConfigError, match="no set with role 'val', which a benchmark run needs"):
        resolve_benchmark(benchmark_from_dict(d, shapes.parent))
    resolve_benchmark(benchmark_from_dict(d, shapes.parent), needs=("train",))  # enough for training
    spec = benchmark_from_dict({**d, "sets": [s for s in d["sets"] if s["role"] != "train"]}, shapes.parent)
    with pytest.raises(ConfigError, match="no set with role 'train', which fitting methods"):
        spec.train_set


def test_run_config_stores_the_full_definition(shapes: Path, tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "by-path.yaml").write_text("benchmark: ../bench/shapes.yaml\nmethods: [{name: msp}]\n")
    inline = _definition(shapes)
    for s in inline["sets"]:  # relative to the run config's folder now
        for key in ("folder", "list", "root"):
            if key in s:
                s[key] = "../bench/" + s[key]
    (runs / "inline.yaml").write_text(yaml.safe_dump({"benchmark": inline, "methods": [{"name": "msp"}]}))
    monkeypatch.chdir(tmp_path / "bench" / "data")  # the working directory plays no part
    spec = load_benchmark_file(shapes)
    for name in ("by-path", "inline"):
        cfg = load_run_config(runs / f"{name}.yaml")
        assert cfg.benchmark == benchmark_dict(spec)
        stored = json.loads(json.dumps(config_dict(cfg)))  # what run_config.json holds
        assert stored["benchmark"]["sets"][0]["folder"] == str(shapes.parent / "data" / "train")
        stored.pop("fusion")
        rebuilt = build_run_config(stored)
        assert resolve_benchmark(rebuilt.benchmark) == spec and rebuilt.plan_key() == cfg.plan_key()
    assert build_run_config({"benchmark": "fmnist6"}).benchmark == "fmnist6"
    assert config_dict(build_run_config({"benchmark": "fmnist6"}))["benchmark"] == "fmnist6"


def test_a_definition_file_is_a_run_config(shapes: Path) -> None:
    cfg = load_run_config(shapes)
    assert cfg.benchmark["name"] == "shapes"
    names = [m.name for m in cfg.methods]
    assert "msp" in names and "ensemble" not in names  # the shipped fmnist6 members do not fit user data
    with pytest.raises(ConfigError, match="not a benchmark definition"):
        load_benchmark_file(Path(__file__).parents[1] / "src" / "diffguard" / "configs" / "fmnist6.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_benchmark(str(shapes.parent / "missing.yaml"))
