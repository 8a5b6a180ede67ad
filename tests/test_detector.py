"""DiffGuard detector on tiny random models: shapes, conventions, per-sample early stop, labels, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import ModuleClassifier
from diffguard.detectors.diffguard import DiffGuard
from diffguard.diffusion.inversion import Inversion
from diffguard.guidance.clean_grad import ClassifierGuidance
from diffguard.guidance.dsg import CFGGuidance
from diffguard.diffusion.early_stop import psnr_below
from tiny_nets import tiny_pixel_models


@pytest.fixture(scope="module")
def tiny():
    backend, clf = tiny_pixel_models(0)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    return backend, clf, x


GUIDANCES = {
    "clean_grad": ClassifierGuidance(scale=3.0, cutouts=2),
    "dsg": CFGGuidance(scale=3.0, cam_cut=0.3),
    "cfg": CFGGuidance(scale=3.0, cam_cut=None),
}


@pytest.mark.parametrize("name", sorted(GUIDANCES))
@pytest.mark.parametrize("reference", ["input", "unguided"])
def test_analyze_shapes_and_finiteness(tiny, name, reference):
    backend, clf, x = tiny
    det = DiffGuard(clf, backend, GUIDANCES[name], Inversion(steps=6, cap=4), reference=reference,
                    distances=("l2", "psnr"))
    res = det.analyze(x, with_unguided=True)
    assert res.score.shape == (3,) and torch.isfinite(res.score).all()
    assert res.synthesis.shape == x.shape and res.unguided.shape == x.shape
    assert res.synthesis.min() >= -1 and res.synthesis.max() <= 1
    assert set(res.distances) == {"l2", "psnr"} and torch.equal(res.score, res.distances["l2"])
    assert res.stop_level.tolist() == [4, 4, 4] and res.start_level.tolist() == [4, 4, 4]
    assert torch.equal(res.reference, x if reference == "input" else res.unguided)
    assert torch.equal(det.analyze(x, with_unguided=True).score, res.score)  # deterministic
    assert torch.allclose(det.predict(x), res.score, atol=1e-4)  # batch of B instead of 2B: float noise only


def test_authors_start_convention_is_one_level_noisier(tiny):
    backend, clf, x = tiny
    det = DiffGuard(clf, backend, GUIDANCES["cfg"], Inversion(steps=6, cap=4, start_offset=1))
    res = det.analyze(x)
    assert res.start_level.tolist() == [5, 5, 5]


def test_scale_zero_guidance_reconstructs_like_unguided(tiny):
    backend, clf, x = tiny
    det = DiffGuard(clf, backend, CFGGuidance(scale=0.0, cam_cut=None), Inversion(steps=6), reference="unguided")
    res = det.analyze(x)
    assert torch.allclose(res.synthesis, res.unguided, atol=1e-6)
    assert float(res.score.abs().max()) < 1e-4


def test_batch_with_different_stop_levels_equals_each_sample_alone(tiny):
    backend, clf, x = tiny  # float64 so that batch-size-dependent float32 kernels do not blur the comparison
    backend = PixelBackend(copy.deepcopy(backend.unet).double(), backend.alphas_cumprod, 6, 1)
    clf = ModuleClassifier(copy.deepcopy(clf.model).double(), 6, "layer4", resolution=(28, 28))
    x = torch.stack([x[0], x[1] * 0.2, x[2] * 0.5]).double()  # different contents -> different stop levels
    stop = psnr_below(15.0)  # stops at levels 4, 10 (cap) and 5 for these three images
    det = DiffGuard(clf, backend, ClassifierGuidance(scale=2.0, cutouts=2, shared_crops=False),
                    Inversion(steps=10, stop=stop), reference="unguided")
    batch = det.analyze(x, ids=torch.arange(3))
    assert len(set(batch.stop_level.tolist())) > 1, batch.stop_level
    for b in range(3):
        alone = det.analyze(x[b : b + 1], ids=torch.tensor([b]))
        assert torch.equal(alone.stop_level, batch.stop_level[b : b + 1])
        assert torch.allclose(alone.synthesis, batch.synthesis[b : b + 1], atol=1e-9)
        assert torch.allclose(alone.score, batch.score[b : b + 1], atol=1e-9)


def test_label_override_and_oracle(tiny):
    backend, clf, x = tiny
    det = DiffGuard(clf, backend, GUIDANCES["cfg"], Inversion(steps=4), label_mode="oracle", seed=3)
    y_true = torch.tensor([2, -1, -1])
    res = det.analyze(x, y_true=y_true)
    assert res.labels[0] == 2 and ((res.labels >= 0) & (res.labels < 6)).all()
    again = det.analyze(x, y_true=y_true)
    assert torch.equal(res.labels, again.labels)  # random OOD labels come from the seeded generator
    forced = det.analyze(x, labels=torch.tensor([5, 5, 5]))
    assert forced.labels.tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="y_true"):
        det.analyze(x)


@pytest.mark.parametrize("bad, msg", [
    (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
    (torch.full((1, 1, 28, 28), 2.0), r"\[-1, 1\]"),
    (torch.zeros(1, 28, 28), "B, C, H, W"),
])
def test_bad_input(tiny, bad, msg):
    backend, clf, _ = tiny
    det = DiffGuard(clf, backend, GUIDANCES["cfg"], Inversion(steps=4))
    with pytest.raises(ValueError, match=msg):
        det.predict(bad)


def test_bad_options(tiny):
    backend, clf, _ = tiny
    with pytest.raises(ValueError, match="reference"):
        DiffGuard(clf, backend, GUIDANCES["cfg"], reference="original")
    with pytest.raises(ValueError, match="score"):
        DiffGuard(clf, backend, GUIDANCES["cfg"], distances=("l2",), score_distance="ssim")
    with pytest.raises(ValueError, match="variant"):
        Inversion(variant="backwards")


def test_combined_score_is_the_sum_of_validation_z_scores(tiny):
    backend, clf, x = tiny
    scales = {"gmsd": (0.05, 0.02), "l2": (10.0, 4.0)}
    det = DiffGuard(clf, backend, GUIDANCES["dsg"], Inversion(steps=6, cap=4), distances=("l2", "gmsd", "l1"),
                    score_distance="gmsd+l2", score_scales=scales)
    res = det.analyze(x)
    want = (res.distances["gmsd"] - 0.05) / 0.02 + (res.distances["l2"] - 10.0) / 4.0
    assert torch.allclose(res.score, want) and not torch.allclose(res.score, res.distances["l2"])
    assert det.params()["score_scales"] == scales
    # one distance with a scale: the same ranking, affine
    single = DiffGuard(clf, backend, GUIDANCES["dsg"], Inversion(steps=6, cap=4), distances=("l2",),
                       score_scales={"l2": (10.0, 4.0)})
    assert torch.allclose(single.analyze(x).score, (res.distances["l2"] - 10.0) / 4.0)
    assert "score_scales" not in DiffGuard(clf, backend, GUIDANCES["dsg"]).params()


@pytest.mark.parametrize("kwargs, message", [
    ({"score_distance": "gmsd+l2"}, "needs score_scales"),
    ({"score_distance": "gmsd+l2", "score_scales": {"gmsd": (0.0, 1.0)}}, "no entry for distance 'l2'"),
    ({"score_distance": "gmsd+l2", "score_scales": {"gmsd": (0.0, 1.0), "l2": (0.0, 0.0)}}, "scale finite and > 0"),
    ({"score_distance": "gmsd+l2", "score_scales": {"gmsd": (0.0,), "l2": (0.0, 1.0)}}, "must be \\(median, scale\\)"),
    ({"score_distance": "gmsd+ssim", "score_scales": {"gmsd": (0, 1), "ssim": (0, 1)}}, "add them to distances"),
    ({"score_distance": "l2+l2", "score_scales": {"l2": (0, 1)}}, "each once"),
])
def test_combined_score_refuses_incomplete_scales(tiny, kwargs, message):
    backend, clf, _ = tiny
    with pytest.raises(ValueError, match=message):
        DiffGuard(clf, backend, GUIDANCES["dsg"], distances=("l2", "gmsd"), **kwargs)


def test_dsg_mask_from_prediction_or_guided_label(tiny):
    backend, clf, x = tiny
    pred = clf.logits(x).argmax(1)
    other = (pred + 1) % 6
    by_pred = CFGGuidance(cam_cut=0.2, cam_of="predicted").mask(backend, clf, x, other)
    by_guided = CFGGuidance(cam_cut=0.2, cam_of="guided").mask(backend, clf, x, other)
    assert torch.equal(by_pred, CFGGuidance(cam_cut=0.2, cam_of="guided").mask(backend, clf, x, pred))
    assert by_pred.shape == by_guided.shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="cam_of"):
        CFGGuidance(cam_of="input")
