"""Presets, dotted overrides and early-stop rules."""

from __future__ import annotations

import pytest
import torch

from diffguard.guidance.clean_grad import ClassifierGuidance
from diffguard.guidance.dsg import CFGGuidance
from diffguard.diffusion.early_stop import (
    AUTHORS_PSNR_PEAK, any_of, authors_psnr_to_standard, psnr, psnr_below, similarity_below,
)
from diffguard.distances import write_dists_weights
from diffguard.distances.vgg import vgg16_feature_shapes
from diffguard.detectors.diffguard_presets import (
    GUIDANCE_FAMILIES, PRESETS, apply_overrides, diffguard_detector, guidance_family, register_preset,
)


@pytest.fixture(scope="module")
def dists_file(tmp_path_factory):
    torch.manual_seed(0)
    vgg = {k: torch.randn(s) * 0.05 for k, s in vgg16_feature_shapes().items()}
    path = tmp_path_factory.mktemp("w") / "dists.safetensors"
    return write_dists_weights(path, vgg, torch.rand(1475), torch.rand(1475))


def test_authors_psnr_equals_standard_plus_constant():
    x, ref = torch.rand(3, 1, 8, 8) * 2 - 1, torch.rand(3, 1, 8, 8) * 2 - 1
    diff = psnr(x, ref, AUTHORS_PSNR_PEAK) - psnr(x, ref)
    assert torch.allclose(diff, torch.full((3,), 42.1102), atol=1e-3)
    assert abs(authors_psnr_to_standard(48.5) - 6.3898) < 1e-3


def test_rules_and_or_combination():
    x0 = torch.zeros(3, 1, 4, 4)
    x = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.5), torch.full((1, 4, 4), 2.0)])
    rows = torch.arange(3)
    low_psnr = psnr_below(10.0)(x, x0, rows, 1)  # standard PSNR of 0, 0.25, 1 on [0, 1]: inf, 12.0, 0 dB
    assert low_psnr.tolist() == [False, False, True]
    sim = similarity_below(lambda a, b, r: torch.tensor([0.1, 0.9, 0.9]), 0.5)(x, x0, rows, 1)
    assert sim.tolist() == [True, False, False]
    both = any_of(psnr_below(10.0), similarity_below(lambda a, b, r: torch.tensor([0.1, 0.9, 0.9]), 0.5))
    assert both(x, x0, rows, 1).tolist() == [True, False, True]


def test_registered_presets():
    assert PRESETS.list() == ["fmnist6-cfg", "fmnist6-clean-grad", "fmnist6-fast", "fmnist6-tuned",
                              "fmnist6-tuned-large", "gdm", "ldm", "starter-cfg"]
    for name in ("fmnist6-tuned", "fmnist6-fast", "fmnist6-tuned-large"):  # chosen by diffguard tune (docs/tuning.md): CFG, fewer steps
        kw = PRESETS.create(name)
        assert isinstance(kw["guidance"], CFGGuidance) and kw["inversion"].steps < 50
        assert set(kw["score_distance"].split("+")) <= set(kw["distances"])
        assert set(kw.get("score_scales") or {}) == ({"gmsd", "l2"} if name == "fmnist6-tuned" else set())
    assert isinstance(PRESETS.create("fmnist6-cfg")["guidance"], CFGGuidance)
    assert isinstance(PRESETS.create("fmnist6-clean-grad")["guidance"], ClassifierGuidance)


def test_starter_preset_is_fmnist6_cfg_under_a_generic_name():
    kw = PRESETS.create("starter-cfg")
    assert kw == PRESETS.create("fmnist6-cfg")
    assert (kw["inversion"].steps, kw["inversion"].spacing, kw["inversion"].cap) == (50, "even", 30)
    assert (kw["guidance"].scale, kw["guidance"].cam_cut) == (3.0, 0.1)


def test_every_preset_declares_the_family_of_its_guidance():
    kinds = {"cfg": CFGGuidance, "clean_grad": ClassifierGuidance}
    assert set(kinds) == set(GUIDANCE_FAMILIES)
    for name in PRESETS.list():
        kw = PRESETS.create(name, **({"dists_threshold": None} if name == "gdm" else {}))  # gdm: no DISTS weights
        assert isinstance(kw["guidance"], kinds[guidance_family(name)]), name


def test_a_preset_without_a_known_family_is_refused(monkeypatch):
    monkeypatch.setattr(PRESETS, "_items", dict(PRESETS._items))
    with pytest.raises(ValueError, match="unknown guidance family 'dsg'"):
        register_preset("mine", family="dsg")
    PRESETS.register("mine")(lambda: {})
    with pytest.raises(ValueError, match="preset 'mine' declares no guidance family"):
        guidance_family("mine")
    register_preset("mine-too", family="clean_grad")(lambda: {})
    assert guidance_family("mine-too") == "clean_grad"


def test_gdm_and_ldm_follow_the_authors(dists_file):
    gdm = PRESETS.create("gdm", dists_weights=dists_file)
    inv, g = gdm["inversion"], gdm["guidance"]
    assert (inv.steps, inv.first, inv.cap, inv.start_offset, inv.variant) == (100, 1, 91, 1, "current")
    assert (g.scale, g.cutouts, g.crop_out, g.gradient, g.shared_crops) == (3.0, 8, 224, "mixed", True)
    assert gdm["reference"] == "unguided" and gdm["distances"] == ("dists",)
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    assert inv.stop(x0, x0, torch.arange(2), 2).tolist() == [False, False]  # identical: no stop
    ldm = PRESETS.create("ldm", dists_weights=dists_file)
    assert (ldm["inversion"].spacing, ldm["inversion"].variant, ldm["inversion"].steps) == ("uniform", "shifted", 25)
    assert (ldm["guidance"].scale, ldm["guidance"].cam_cut, ldm["reference"]) == (10.0, 0.3, "input")


def test_overrides():
    kw = apply_overrides(PRESETS.create("fmnist6-cfg"), ["guidance.cam_cut=0.25", "inversion.cap=12",
                                                         "reference=unguided", "inversion.stop=psnr:7"])
    assert kw["guidance"].cam_cut == 0.25 and kw["inversion"].cap == 12 and kw["reference"] == "unguided"
    assert callable(kw["inversion"].stop)
    with pytest.raises(ValueError, match="no field 'cut'"):
        apply_overrides(kw, ["guidance.cut=0.2"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(kw, ["guidance.scale"])
    with pytest.raises(ValueError, match="psnr:<dB>"):
        apply_overrides(kw, ["inversion.stop=dists:0.3"])


def test_unknown_preset_suggests_names():
    with pytest.raises(KeyError, match="fmnist6-cfg"):
        PRESETS.get("fmnist6-cgf")


def test_create_detector_refuses_unknown_option():
    with pytest.raises(ValueError, match="unknown DiffGuard option"):
        diffguard_detector(object(), object(), "fmnist6-cfg", refrence="input")
