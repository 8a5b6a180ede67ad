"""Golden test against the DiffGuard authors' latent-diffusion path with Distinct Semantic Guidance
(../shared/fixtures/authors-ldm, see its README): our CompVis-LDM converter, LatentBackend, Grad-CAM mask and the
``ldm`` preset (5 steps, CFG scale 10, cut 0.3, and with the mask off) against the recorded run. Tolerances: §4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors-ldm"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"authors' LDM fixture not found at {FIXTURES} "
                                "(clone the repository next to shared/)")


def _load(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / name))


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class TinyCNN(nn.Module):
    """The fixture's classifier-under-protection (README §1.1), an arbitrary nn.Module with a CAM layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.layer1 = _block(3, 16, 1), _block(16, 32, 2)
        self.layer2, self.layer3 = _block(32, 48, 2), _block(48, 64, 2)
        self.layer4 = nn.Sequential(_block(64, 64, 1), _block(64, 64, 1))
        self.head = nn.Sequential(nn.Conv2d(64, 96, 1), nn.SiLU())
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4, self.head):
            x = m(x)
        return self.fc(x.mean(dim=(2, 3)))


def build_ldm_parts():
    """(LatentBackend of the converted LDM, TinyCNN classifier adapter) from the fixture files."""
    from diffguard.backends.compvis_ldm import load_compvis_ldm
    from diffguard.classify.wrap import module_classifier

    cfg = json.loads((FIXTURES / "C_ldm.config.json").read_text())
    backend = load_compvis_ldm(FIXTURES / "C_ldm.weights.safetensors", cfg["ldm_config"])
    clf = module_classifier(TinyCNN(), FIXTURES / "C_classifier_cnn.weights.safetensors", num_classes=10,
                            cam_layer="layer4.1", resolution=64)
    return backend, clf


@pytest.fixture(scope="module")
def ldm_parts():
    return build_ldm_parts()


def _close(ours: torch.Tensor, theirs: torch.Tensor, atol: float, what: str) -> float:
    err = (ours - theirs).abs().max().item()
    assert err <= atol, f"{what}: max abs {err} > {atol}"
    return err


def test_ldm_networks_match_the_authors(ldm_parts) -> None:
    backend, clf = ldm_parts
    io = _load("C_ldm_cam.io.safetensors")
    x = io["x_input"].float()
    assert backend.null_label == 10
    with torch.no_grad():
        _close(backend.encode(x), io["z0"], 1e-4, "z0")
        _close(clf.logits(x), io["cls_logits_input"], 1e-4, "classifier logits")
        logits, feats = clf.logits_and_features(torch.cat([x, io["recon"]]))
        _close(logits.view(2, 3, -1).transpose(0, 1), io["logits_saved"], 1e-4, "logits [input, recon]")
        _close(feats.view(2, 3, -1).transpose(0, 1), io["feat_saved"], 1e-4, "features [input, recon]")
        eps = backend.eps(io["trace_inv_z"][0], io["trace_inv_t"][0], None)
        _close(eps, io["trace_inv_eps"][0], 1e-5, "inversion eps")
        _, idx = backend.autoencoder.quantize(io["latent_final"])
    assert torch.equal(idx, io["quant_indices"])


def test_ldm_dsg_mask_matches_the_authors(ldm_parts) -> None:
    from diffguard.classify.gradcam import grad_cam
    from diffguard.detectors.diffguard_presets import PRESETS

    backend, clf = ldm_parts
    io = _load("C_ldm_cam.io.safetensors")
    x, y = io["x_input"].float(), io["pred_label"]
    cam = torch.nn.functional.interpolate(grad_cam(clf, x, y)[:, None], size=(64, 64), mode="bilinear",
                                          align_corners=False)[:, 0]
    _close(cam, io["cam_raw"], 1e-6, "cam_raw")
    guidance = PRESETS.create("ldm", steps=5)["guidance"]
    mask = guidance.mask(backend, clf, x, y, (16, 16))
    assert torch.equal(mask.expand(-1, 3, -1, -1), io["mask_latent"])


@pytest.mark.parametrize("run", ["cam", "nocam"])
def test_ldm_pipeline_matches_the_authors(ldm_parts, run: str) -> None:
    from diffguard.detectors.diffguard_presets import diffguard_detector

    backend, clf = ldm_parts
    cam_io, io = _load("C_ldm_cam.io.safetensors"), _load(f"C_ldm_{run}.io.safetensors")
    x = cam_io["x_input"].float()
    det = diffguard_detector(clf, backend, "ldm", steps=5, scale=10.0, cam_cut=0.3 if run == "cam" else None,
                          distances=("l2", "gmsd", "logits_l1"))
    res = det.analyze(x)
    _latents_match(det, backend, clf, x, res.labels, cam_io, io)
    assert res.predicted.tolist() == cam_io["pred_label"].tolist() == [5, 9, 5]
    assert [int(det.levels.timesteps[j]) for j in range(len(det.levels))] == [0, 1, 201, 401, 601, 801]
    err = (res.synthesis - io["recon"]).abs()
    assert err.max() <= 1e-4 and err.mean() <= 1e-5, f"recon: max {err.max()}, mean {err.mean()}"
    for name, key, atol in (("l2", "score_l2", 1e-4), ("gmsd", "score_gmsd", 1e-6),
                            ("logits_l1", "score_logits", 1e-4)):
        _close(-res.distances[name], io[key], atol, key)  # the authors' scores are negated distances


def _latents_match(det, backend, clf, x, y, cam_io, io) -> None:
    """The detector's own parts, step by step: inversion to level 5, guided sampling back to level 0."""
    from diffguard.diffusion.ddim import ddim_invert, ddim_sample

    inv = det.inversion
    with torch.no_grad():
        z, level = ddim_invert(inv.eps_fn(backend), backend.encode(x), det.levels, inv.first, inv.cap, inv.variant)
    assert level.tolist() == [5, 5, 5]
    _close(z, cam_io["latent_inverted"], 1e-4, "latent_inverted")
    eps = det.guidance.build(backend, clf, x, y, det.generators(torch.arange(3)), tuple(z.shape[-2:]))
    with torch.no_grad():
        final = ddim_sample(eps, z, det.levels, level)
    _close(final, io["latent_final"], 1e-3, "latent_final")
