"""fmnist6's per-kind covariate-shift sets ``<val|test>-csid-<kind>-<severity>`` (fake Fashion-MNIST), the mixed
sets left as they were, the shipped configs' plans, tuning's csid-set choice and the per-kind report outputs."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from diffguard.bench.definitions import get_benchmark
from diffguard.data import corruptions as c
from diffguard.data import fmnist6
from diffguard.data.fmnist6 import CORE_SET_NAMES, CSID_KIND_SETS, CSID_SEEDS, load_fmnist6
from diffguard.evaluation.evaluate_run import evaluate, write_outputs
from diffguard.report.csid_severity import kind_and_severity, severity_markdown, severity_tables
from diffguard.report.plots import csid_severity_figure
from diffguard.run.run_config import build_run_config, load_run_config
from diffguard.run.runner import Runner
from diffguard.tune.data import csid_note, csid_split, tuning_sets

SHAPE = (1, 28, 28)
OLD_RANGES = {"blur": (0.5, 0.7), "noise": (0.04, 0.07), "shift": (1, 2), "contrast": (0.7, 0.9), "jpeg": (40, 60)}
OLD_OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]
SHIPPED = ["train", "val", "test", "near-fmnist", "far-digits", "far-gaussian", "far-uniform", "val-ood", "val-far",
           "val-csid", "test-csid"]


def old_draw(rng: np.random.Generator) -> tuple[str, object]:
    """The mixed recipe's draw as it was written before severities existed (kind, then its mild parameter)."""
    kind = c.CORRUPTIONS[int(rng.integers(len(c.CORRUPTIONS)))]
    if kind == "blur":
        return kind, float(rng.uniform(0.5, 0.7))
    if kind == "noise":
        std = float(rng.uniform(0.04, 0.07))
        return kind, rng.standard_normal(SHAPE).astype(np.float32) * np.float32(std)
    if kind == "shift":
        return kind, OLD_OFFSETS[int(rng.integers(len(OLD_OFFSETS)))]
    if kind == "contrast":
        return kind, float(rng.uniform(0.7, 0.9))
    return kind, int(rng.integers(40, 61))


def old_corrupt(images: torch.Tensor, ids: torch.Tensor, seed: int) -> torch.Tensor:
    """The mixed sets' images by the old code path: old draws, applied kind by kind, clamped."""
    draws = [old_draw(np.random.default_rng([seed, int(i)])) for i in ids]
    out = images.float().clone()
    for kind in c.CORRUPTIONS:
        rows = [i for i, d in enumerate(draws) if d[0] == kind]
        if rows:
            out[rows] = c.apply(out[rows], kind, [draws[i][1] for i in rows])
    return out.clamp_(-1.0, 1.0)


@pytest.fixture(scope="module")
def kind_sets(fake_fmnist_root: Path) -> dict[str, fmnist6.ImageSet]:
    names = ("val", "test", "val-csid", "test-csid", "test-csid-noise-1", "test-csid-blur-3", "test-csid-jpeg-2",
             "test-csid-shift-3", "val-csid-contrast-2", "val-csid-noise-3")
    return load_fmnist6(names, fake_fmnist_root)


def test_severity_1_is_the_mild_recipe_and_draw_is_unchanged() -> None:
    assert {k: c.SEVERITIES[k][0] for k in c.CORRUPTIONS} == OLD_RANGES
    assert (c.BLUR_SIGMA, c.NOISE_STD, c.SHIFT_PX, c.CONTRAST, c.JPEG_QUALITY) == tuple(OLD_RANGES.values())
    assert c.shift_offsets(c.SEVERITIES["shift"][0]) == OLD_OFFSETS and c.blur_radius(c.BLUR_SIGMA) == 3
    for sid in range(300):
        new, (kind, param) = c.draw(np.random.default_rng([9, sid]), SHAPE), old_draw(np.random.default_rng([9, sid]))
        assert new.kind == kind
        assert np.array_equal(new.param, param) if kind == "noise" else new.param == param


def test_the_mixed_sets_are_byte_identical_to_the_old_code_path(kind_sets) -> None:
    for clean, mixed in (("val", "val-csid"), ("test", "test-csid")):
        a, b = kind_sets[clean], kind_sets[mixed]
        assert len(b) == len(a) and torch.equal(a.ids, b.ids) and torch.equal(a.labels, b.labels)
        assert b.role == ("val_csid" if clean == "val" else "csid")
        assert CSID_SEEDS[mixed] == {"val": 4, "test": 5}[clean]
        rows = torch.arange(0, len(a), 10)  # an image's corruption depends on (seed, id) only: a subset suffices
        assert torch.equal(b.images[rows], old_corrupt(a.images[rows], a.ids[rows], CSID_SEEDS[mixed]))


def test_severity_ranges_grow_and_every_draw_stays_in_its_range() -> None:
    for kind, ranges in c.SEVERITIES.items():
        assert [lo <= hi for lo, hi in ranges] == [True] * 3
        strength = [r[1] for r in ranges] if kind in ("blur", "noise", "shift") else [-r[0] for r in ranges]
        assert strength == sorted(strength), kind  # each severity stronger than the one before
        for sev in c.SEVERITY_LEVELS:
            lo, hi = c.severity_range(kind, sev)
            draws = c.kind_draws(range(200), 7, kind, sev, SHAPE)
            assert {d.kind for d in draws} == {kind}
            if kind == "noise":
                stds = [float(np.std(d.param)) for d in draws]
                assert lo * 0.85 < min(stds) and max(stds) < hi * 1.15
            elif kind == "shift":
                assert {max(abs(dy), abs(dx)) for dy, dx in (d.param for d in draws)} == set(range(lo, hi + 1))
            else:
                params = [d.param for d in draws]
                assert lo <= min(params) and max(params) <= hi
                assert all(isinstance(p, int) for p in params) == (kind == "jpeg")
    with pytest.raises(ValueError, match="severity"):
        c.severity_range("noise", 4)


def test_a_per_kind_set_is_its_kind_only_seeded_by_set_and_id(kind_sets) -> None:
    for name in ("test-csid-noise-1", "test-csid-blur-3", "test-csid-jpeg-2", "test-csid-shift-3",
                 "val-csid-contrast-2", "val-csid-noise-3"):
        split, kind, sev = CSID_KIND_SETS[name]
        s, clean = kind_sets[name], kind_sets[split]
        assert s.role == ("val_csid" if split == "val" else "csid") == fmnist6.ROLES[name]
        pos = torch.from_numpy(np.searchsorted(clean.ids.numpy(), s.ids.numpy()))
        assert torch.equal(clean.ids[pos], s.ids) and torch.equal(clean.labels[pos], s.labels)
        draws = c.kind_draws(s.ids, CSID_SEEDS[name], kind, sev, SHAPE)
        radius = c.blur_radius(c.severity_range(kind, sev))
        expected = c.apply(clean.images[pos].clone(), kind, [d.param for d in draws], radius).clamp(-1, 1)
        assert torch.equal(s.images, expected)
        some = torch.tensor([7, 3, 499])  # any subset, in any order, gives the same pixels per image
        assert torch.equal(c.corrupt_kind(clean.images[pos[some]], s.ids[some], CSID_SEEDS[name], kind, sev),
                           s.images[some])
    assert len(set(CSID_SEEDS.values())) == len(CSID_SEEDS) == 32  # every csid set its own seed


def test_the_same_stratified_images_in_every_kind_and_severity(kind_sets, fake_fmnist_root: Path) -> None:
    for split, size, per_class in (("test", 1000, [167] * 4 + [166] * 2), ("val", 500, [84] * 2 + [83] * 4)):
        names = [n for n in kind_sets if n.startswith(f"{split}-csid-")]
        assert len(names) >= 2 and fmnist6.CSID_KIND_SIZES[split] == size
        first = kind_sets[names[0]]
        assert len(first) == size and torch.bincount(first.labels).tolist() == per_class
        assert bool((first.ids[1:] > first.ids[:-1]).all())
        assert all(torch.equal(kind_sets[n].ids, first.ids) for n in names)
    again = load_fmnist6(("test-csid-noise-1",), fake_fmnist_root)["test-csid-noise-1"]  # built alone, no test
    assert torch.equal(again.images, kind_sets["test-csid-noise-1"].images)


def test_names_roles_and_the_benchmark_spec() -> None:
    assert fmnist6.SET_NAMES[:11] == tuple(SHIPPED) == CORE_SET_NAMES and len(fmnist6.SET_NAMES) == 41
    assert fmnist6.csid_kind_name("test", "noise", 2) == "test-csid-noise-2"
    spec = get_benchmark("fmnist6")
    assert [s.name for s in spec.sets] == list(fmnist6.SET_NAMES)
    assert len(spec.by_role("val_csid")) == 16 and len(spec.by_role("csid")) == 16
    assert spec.get("val-csid-jpeg-3").role == "val_csid" and spec.get("test-csid-blur-1").role == "csid"
    with pytest.raises(ValueError, match="<val\\|test>-csid-<kind>-<severity>"):
        load_fmnist6(("test-csid-noise-4",))


def test_shipped_configs_plan_the_sets_they_ran_before() -> None:
    spec = get_benchmark("fmnist6")
    assert spec.default_sets() == SHIPPED  # the per-kind sets are optional: run only when a config names them
    for name in ("fmnist6", "ablation-cam-cut", "ablation-clean-grad", "ablation-early-stop", "ablation-steps"):
        cfg = load_run_config(name)
        assert cfg.sets is None, name  # unchanged configs: their plan key (and every results folder) stays valid
        assert Runner._set_names(types.SimpleNamespace(cfg=cfg, spec=spec)) == SHIPPED  # what Runner opens
    tuned = Runner._set_names(types.SimpleNamespace(cfg=load_run_config("fmnist6-tuned"), spec=spec))
    assert tuned == ["train", "val", "test", "near-fmnist", "far-digits", "far-gaussian", "far-uniform", "test-csid"]


def test_tuning_uses_the_val_csid_sets_the_config_lists() -> None:
    spec = get_benchmark("fmnist6")
    assert tuning_sets(spec, SHIPPED)["val_csid"] == ["val-csid"]
    assert csid_split(spec, SHIPPED) == (["val-csid"], ["test-csid"])
    assert csid_note(spec, listed=SHIPPED).endswith("val-csid; csid test sets, never opened: test-csid")
    assert tuning_sets(spec)["val_csid"] == ["val-csid"]  # no list: the default val_csid sets
    chosen = tuning_sets(spec, [*SHIPPED, "val-csid-noise-2", "test-csid-noise-2"])["val_csid"]
    assert chosen == ["val-csid", "val-csid-noise-2"]


def _rows() -> list[dict]:
    """Metric rows of two methods: a mixed set, three per-kind test sets and one per-kind validation set."""
    rows = []
    for m, base in (("MSP", 0.05), ("DG", 0.10)):
        rows.append({"method": m, "set": "test-csid", "group": "csid", "csid flagged": 0.5, "ACC": 0.9})
        for name, extra in (("test-csid-noise-2", 0.02), ("test-csid-noise-1", 0.0), ("test-csid-blur-3", 0.2),
                            ("val-csid-noise-1", 0.01)):
            rows.append({"method": m, "set": name, "group": "csid", "csid flagged": base + extra, "ACC": 0.8})
        rows.append({"method": m, "set": "near-fmnist", "group": "near", "AUROC": 0.9})
    return rows


def test_severity_tables_group_by_name_and_split_by_role() -> None:
    assert kind_and_severity("test-csid-noise-2") == ("noise", 2) and kind_and_severity("test-csid") is None
    test, val = severity_tables(_rows(), validation=["val-csid-noise-1"])
    assert (test.split, test.columns) == ("test", (("noise", 1), ("noise", 2), ("blur", 3)))
    assert test.flagged["DG"][("blur", 3)] == pytest.approx(0.3) and test.accuracy[("noise", 1)] == 0.8
    assert (val.split, val.columns) == ("validation", (("noise", 1),))
    assert val.flagged["MSP"] == pytest.approx({("noise", 1): 0.06})
    md = severity_markdown([test, val])
    assert "| method | noise 1 | noise 2 | blur 3 |" in md and "| DG | 10.00 | 12.00 | 30.00 |" in md
    assert "## Validation sets (role val_csid)" in md and "| classifier ACC | 80.00 |" in md
    assert severity_tables([r for r in _rows() if not kind_and_severity(r["set"])]) == []
    assert csid_severity_figure(test)[:8] == b"\x89PNG\r\n\x1a\n"


def _tiny_run(out: Path, tiny_models: tuple[Path, Path], root: Path, extra: list[str]) -> Path:
    clf, diff = tiny_models
    cfg = build_run_config({"benchmark": "fmnist6", "classifier": str(clf), "diffusion": str(diff),
                            "data_root": str(root), "limit": 4, "val_limit": 4, "batch_size": 4, "gallery": 0,
                            "sets": ["train", "val", "test", "near-fmnist", *extra], "methods": [{"name": "msp"}]})
    runner = Runner(cfg, out, progress=False)
    with runner.run() as store:
        write_outputs(runner, store, evaluate(runner, store), {"machine": "test"})
    return out


def test_csid_table_and_plot_only_for_a_run_with_per_kind_sets(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                              fake_fmnist_root: Path) -> None:
    run = _tiny_run(tmp_path / "a", tiny_models, fake_fmnist_root,
                    ["test-csid-noise-1", "test-csid-noise-3", "val-csid-blur-2"])
    md = (run / "csid.md").read_text()
    assert "| method | noise 1 | noise 3 |" in md and "| method | blur 2 |" in md and "\n| msp |" in md
    assert (run / "figures" / "csid_severity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "figures" / "csid_severity-validation.png").is_file()
    html = (run / "report.html").read_text()
    assert "Covariate shift by corruption kind and severity" in html and "figures/csid_severity.png" in html
    plain = _tiny_run(tmp_path / "b", tiny_models, fake_fmnist_root, ["val-csid"])
    assert not (plain / "csid.md").exists() and not (plain / "figures" / "csid_severity.png").exists()
    assert "Covariate shift by corruption kind" not in (plain / "report.html").read_text()
