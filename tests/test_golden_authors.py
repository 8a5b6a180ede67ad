"""Golden tests against the DiffGuard authors' guided-diffusion path (../shared/fixtures/authors, see its README).

A1/A2: ADM UNet forwards through our converter. B: the whole GDM pipeline (AES, Clean Grad with cutouts, guided and
unguided reconstructions, scores) through the converter, our PixelBackend, the torchvision adapter and the ``gdm``
preset with the fixture's settings (ddim20, early_stop_steps 2, PSNR-only AES). Tolerances are the README's (§1,
§2.6); labels, stop steps, start levels and crop windows must match exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"authors' fixtures not found at {FIXTURES} "
                                "(clone the repository next to shared/)")


def _load(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / name))


@pytest.mark.parametrize("name", ["A1_unet32_uncond", "A2_unet32_cond10"])
def test_adm_unet_forward_matches_the_authors(name: str) -> None:
    from diffguard.backends.adm import AdmConfig, infer_adm_config, load_adm_unet

    kwargs = json.loads((FIXTURES / f"{name}.config.json").read_text())["constructor_kwargs"]
    state = _load(f"{name}.weights.safetensors")
    inferred = infer_adm_config(state, num_head_channels=kwargs["num_head_channels"], image_size=32)
    assert inferred == AdmConfig.from_kwargs(kwargs)  # the layout is read back from the weights alone
    unet = load_adm_unet(FIXTURES / f"{name}.weights.safetensors", kwargs)
    io = _load(f"{name}.io.safetensors")
    with torch.no_grad():
        out = unet(io["x"], io["t"], class_labels=io.get("y")).sample
    err = (out - io["out"]).abs().max().item()
    assert err <= 1e-4, f"max abs {err}"
    assert err / io["out"].abs().max().item() <= 1e-5


# ---------------------------------------------------------------- fixture B


class Recorder:
    """Wraps a stop rule: keeps PSNR255 per (level, row) and each sample's frozen latent."""

    def __init__(self, rule):
        self.rule, self.psnr, self.latent = rule, {}, {}

    def __call__(self, x_new, x_start, rows, level):
        from diffguard.diffusion.early_stop import AUTHORS_PSNR_PEAK, psnr

        hit = self.rule(x_new, x_start, rows, level)
        for r, v in zip(rows.tolist(), psnr(x_new, x_start, AUTHORS_PSNR_PEAK).tolist()):
            self.psnr[(level, r)] = v
        for r, z in zip(rows[hit].tolist(), x_new[hit]):
            self.latent[r] = z.clone()
        return hit


def build_gdm_parts():
    """(PixelBackend of the 256 px ADM UNet, ViT classifier adapter) from the fixture files."""
    import torchvision

    from diffguard.backends.adm import adm_alphas_cumprod, load_adm_unet
    from diffguard.backends.pixel_unet import PixelBackend
    from diffguard.classify.torchvision import torchvision_classifier

    cfg = json.loads((FIXTURES / "B_gdm.config.json").read_text())
    unet_kwargs = next(v for k, v in cfg.items() if k.startswith("unet_constructor_kwargs"))
    unet = load_adm_unet(FIXTURES / "B_gdm_unet256.weights.safetensors", unet_kwargs)
    backend = PixelBackend(unet, adm_alphas_cumprod("linear", 1000), None, 3, resolution=256)
    vit = torchvision.models.VisionTransformer(**cfg["classifier"]["net_kwargs"])
    clf = torchvision_classifier(vit, FIXTURES / "B_classifier_vit.weights.safetensors", num_classes=10)
    return backend, clf


@pytest.fixture(scope="module")
def gdm_parts():
    return build_gdm_parts()


def _detector(backend, clf, reference: str, recorder: bool = False):
    from diffguard.detectors.diffguard import DiffGuard
    from diffguard.detectors.diffguard_presets import PRESETS

    kwargs = PRESETS.create("gdm", steps=20, early_stop_steps=2, psnr_threshold=48.5, dists_threshold=None)
    rec = Recorder(kwargs["inversion"].stop) if recorder else None
    if rec is not None:
        kwargs["inversion"] = dataclasses.replace(kwargs["inversion"], stop=rec)
    kwargs.update(distances=("l2", "gmsd", "logits_l1"), reference=reference)
    return DiffGuard(clf, backend, **kwargs), rec


def run_aux1(backend, clf):
    """(detector, stop-rule recorder, DiffGuardResult, fixture tensors) of the uncond_aux=True run."""
    det, rec = _detector(backend, clf, "unguided", recorder=True)
    io = _load("B_gdm_aux1.io.safetensors")
    return det, rec, det.analyze(io["x_input"].float()), io


@pytest.fixture(scope="module")
def gdm_aux1_run(gdm_parts):
    return run_aux1(*gdm_parts)


def _close(ours: torch.Tensor, theirs: torch.Tensor, atol: float, what: str) -> None:
    err = (ours - theirs).abs().max().item()
    assert err <= atol, f"{what}: max abs {err} > {atol}"


@pytest.mark.slow
def test_gdm_aux1_labels_early_stop_and_latents(gdm_aux1_run) -> None:
    det, rec, res, io = gdm_aux1_run
    _close(res.logits, io["cls_logits_input"], 1e-4, "input logits")
    assert res.predicted.tolist() == io["pred_label"].tolist() == res.labels.tolist()
    # our level = respaced index + 1; the authors' out_t = index - 1; denoising starts at out_t + 2
    assert (res.stop_level - 2).tolist() == io["out_t"].tolist()
    assert (res.start_level - 1).tolist() == (io["out_t"] + 2).tolist()
    assert [int(det.levels.timesteps[s]) for s in res.start_level] == [400, 350, 450]
    for (level, row), value in rec.psnr.items():
        _close(torch.tensor(value), io["psnr_trajectory"][level - 2, row], 1e-3, f"PSNR step {level - 2} row {row}")
    assert len(rec.psnr) == int((io["out_t"] + 1).sum())  # stopped samples are not computed any more
    latents = torch.stack([rec.latent[b] for b in range(3)])
    _close(latents, io["latent_xT"], 1e-3, "latent_xT")


@pytest.mark.slow
def test_gdm_aux1_reconstructions_and_scores(gdm_aux1_run) -> None:
    _, _, res, io = gdm_aux1_run
    for ours, key in ((res.synthesis, "recon_guided_224"), (res.unguided, "recon_unguided_224")):
        err = (ours - io[key]).abs()
        assert err.max() <= 1e-3 and err.mean() <= 1e-5, f"{key}: max {err.max()}, mean {err.mean()}"
    for name, key, atol in (("l2", "score_l2", 1e-3), ("gmsd", "score_gmsd", 1e-5),
                            ("logits_l1", "score_logits", 1e-3)):
        _close(-res.distances[name], io[key], atol, key)  # the authors' scores are negated distances


def test_gdm_crop_windows_replay_the_authors_generator(gdm_parts) -> None:
    from diffguard.guidance.cutout import Cutouts

    backend, clf = gdm_parts
    det, _ = _detector(backend, clf, "unguided")
    g = det.guidance
    cuts = Cutouts(g.cutouts, g.cut_size, out_size=g.crop_out)
    gen = det.generators(torch.tensor([1]))[0]  # every sample replays the same sequence (seed 100)
    ours = torch.stack([cuts.windows(256, 256, 1, gen)[:, 0] for _ in range(10)])  # (step, crop, [top, left, side])
    theirs = _load("B_gdm_aux1.io.safetensors")["cutout_windows"]  # (step, crop, [size, ox, oy])
    assert torch.equal(ours[..., [2, 1, 0]], theirs)


def first_guidance_gradient(backend, clf) -> torch.Tensor:
    """g at sample 0's first denoising step (t = 400, x = latent_xT[0], y = 9), recovered from the guided eps."""
    det, _ = _detector(backend, clf, "unguided")
    io = _load("B_gdm_aux1.io.safetensors")
    x, y = io["latent_xT"][:1], io["pred_label"][:1]
    t = torch.tensor([400])
    guided = det.guidance.build(backend, clf, x, y, det.generators(torch.tensor([0])))
    unguided = dataclasses.replace(det.guidance, scale=0.0).build(backend, clf, x, y, [torch.Generator()])
    rows = torch.tensor([0])
    with torch.no_grad():
        e_guided, e_plain = guided(x, t, rows), unguided(x, t, rows)
    s1 = (1 - backend.alphas_cumprod[400]).sqrt().float()
    return (e_plain - e_guided) / s1  # eps' = eps_c - sqrt(1 - a) g, g already scaled by 3


def test_gdm_first_guidance_gradient(gdm_parts) -> None:
    io = _load("B_gdm_aux1.io.safetensors")
    _close(first_guidance_gradient(*gdm_parts), io["g_first_step_sample0"], 1e-4, "g_first_step_sample0")


@pytest.mark.slow
def test_gdm_aux0_compares_with_the_input(gdm_parts) -> None:
    """uncond_aux=False (reference = input), run on sample 1 alone (the shortest trajectory) to stay fast."""
    backend, clf = gdm_parts
    det, _ = _detector(backend, clf, "input")
    io = _load("B_gdm_aux0.io.safetensors")
    x = _load("B_gdm_aux1.io.safetensors")["x_input"].float()[1:2]
    res = det.analyze(x, ids=torch.tensor([1]))
    assert res.unguided is None and torch.equal(res.reference, x)
    assert (res.predicted.tolist(), (res.stop_level - 2).tolist()) == ([1], [5])
    err = (res.synthesis - io["recon_guided_224"][1:2]).abs()
    assert err.max() <= 1e-3 and err.mean() <= 1e-5, f"recon: max {err.max()}, mean {err.mean()}"
    for name, key, atol in (("l2", "score_l2", 1e-3), ("gmsd", "score_gmsd", 1e-5),
                            ("logits_l1", "score_logits", 1e-3)):
        _close(-res.distances[name], io[key][1:2], atol, key)
