"""Evaluation counting, the floor measurement and the authors'-structure re-enactment on tiny models."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import ModuleClassifier
from diffguard.detectors.diffguard import DiffGuard
from diffguard.diffusion.inversion import Inversion
from diffguard.guidance.clean_grad import ClassifierGuidance
from diffguard.guidance.dsg import CFGGuidance
from diffguard.diffusion.early_stop import psnr_below
from diffguard.perf.counting import NetworkCounter
from diffguard.perf.throughput import measure, network_modules
from tiny_nets import tiny_pixel_models

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny():
    backend, clf = tiny_pixel_models(0)
    return backend, clf, torch.rand(3, 1, 28, 28) * 2 - 1


@pytest.mark.parametrize("reference, per_image", [("input", 4 + 2 * 4), ("unguided", 4 + 3 * 4)])
def test_counts_cfg_evaluations(tiny, reference, per_image):
    backend, clf, x = tiny  # 4 inversion steps; 4 denoising steps of [x; x] (+ x_unguided with the null label only)
    det = DiffGuard(clf, backend, CFGGuidance(scale=3.0, cam_cut=0.3), Inversion(steps=6, cap=4), reference=reference)
    with NetworkCounter(network_modules(det)) as counter:
        det.analyze(x)
    images = counter.images()
    assert images["diffusion fwd"] == 3 * per_image
    assert images["classifier fwd"] == 3 and images["classifier fwd+bwd"] == 3  # prediction; Grad-CAM


def test_counts_clean_grad_and_times_the_floor(tiny):
    backend, clf, x = tiny
    det = DiffGuard(clf, backend, ClassifierGuidance(scale=3.0, cutouts=2), Inversion(steps=6, cap=4))
    tp, outs = measure(lambda xb, ids: det.analyze(xb, ids=ids), x, 2, network_modules(det), repeats=1)
    assert tp.images == 3 and len(outs) == 2
    assert tp.evals_per_image == {"diffusion fwd": 8.0, "classifier fwd": 1.0, "classifier fwd+bwd": 2 * 4.0}
    assert tp.floor_seconds > 0 and tp.ratio == pytest.approx(tp.seconds / tp.floor_seconds)
    assert set(tp.floor_per_kind) == set(tp.evals_per_image)


def test_counter_tells_a_graph_nobody_used_from_a_backward():
    net = torch.nn.Linear(3, 2)
    with NetworkCounter({"net": net}) as c:
        with torch.no_grad():
            net(torch.ones(4, 3))
        net(torch.ones(5, 3, requires_grad=True))
        out = net(torch.ones(6, 3, requires_grad=True))
        out.sum().backward()
    assert [(k.batch, k.kind) for k in c.calls] == [(4, "fwd"), (5, "fwd+graph"), (6, "fwd+bwd")]
    total, per = c.floor_seconds(repeats=1)
    assert total == pytest.approx(sum(per.values())) and set(per) == {"net fwd", "net fwd+graph", "net fwd+bwd"}


@pytest.mark.parametrize("reference", ["input", "unguided"])
def test_authors_structure_gives_the_production_scores(tiny, reference):
    backend, clf, x = tiny  # float64: batch-size-dependent float32 rounding would be amplified by the guidance
    backend = PixelBackend(copy.deepcopy(backend.unet).double(), backend.alphas_cumprod, 6, 1)
    clf = ModuleClassifier(copy.deepcopy(clf.model).double(), 6, "layer4", resolution=(28, 28))
    x = torch.stack([x[0], x[1] * 0.2, x[2] * 0.5]).double()
    det = DiffGuard(clf, backend, ClassifierGuidance(scale=2.0, cutouts=2), Inversion(steps=10, stop=psnr_below(15.0),
                    start_offset=1), reference=reference, distances=("l2", "psnr"))
    authors = load_script("authors_structure")
    assert len(set(det._invert(x)[1].tolist())) > 1  # the early stop really differs per sample
    row = authors.side_by_side(det, x, batch_size=3)  # production and re-enactment on the same images
    assert row["max_abs_diff"]["l2"] < 1e-9 and row["max_abs_diff"]["psnr"] < 1e-7
    assert row["speedup"] > 0 and row["images"] == 3
    ids = torch.tensor([4, 5, 6])
    with pytest.raises(ValueError, match="Clean-Grad"):
        authors.authors_scores(DiffGuard(clf, backend, ClassifierGuidance(gradient="x0")), x, ids)


def test_authors_cfg_structure_and_speed_at_equal_quality(tiny):
    backend, clf, x = tiny
    slow = DiffGuard(clf, backend, CFGGuidance(scale=3.0, cam_cut=0.1), Inversion(steps=8, cap=6),
                     distances=("l2", "gmsd"), score_distance="gmsd+l2", score_scales={"gmsd": (0, 1), "l2": (1, 2)})
    fast = DiffGuard(clf, backend, CFGGuidance(scale=3.0, cam_cut=0.1), Inversion(steps=4, cap=3))
    authors = load_script("authors_structure")
    ids = torch.arange(3)
    got = authors.authors_scores(slow, x, ids)  # the CFG path: production's batched work plus classifier forwards
    assert torch.equal(got["l2"], slow.analyze(x, ids=ids).distances["l2"])
    with NetworkCounter(network_modules(slow), keep_inputs=False) as c:
        authors.authors_scores(slow, x, ids)
    with NetworkCounter(network_modules(slow), keep_inputs=False) as p:
        slow.analyze(x, ids=ids)
    extra = {k: c.images()[k] - p.images().get(k, 0) for k in c.images()}
    assert extra == {"classifier fwd": 2 * x.shape[0], "diffusion fwd": 0, "classifier fwd+bwd": 0}
    row = authors.side_by_side(slow, x, batch_size=3)
    assert row["max_abs_diff_score"] == 0 and row["score"] == "gmsd+l2"
    q = authors.equal_quality(slow, {"fast": fast, "slow": slow}, x, batch_size=3)
    assert set(q["fast"]) == {"fast", "slow"}
    for f in q["fast"].values():
        assert f["ratio"] == pytest.approx(q["authors_s_per_image"] / f["s_per_image"]) and f["ratio"] > 0
    assert authors.parse_setting("fmnist6-cfg:inversion.steps=25,inversion.cap=15") == (
        "fmnist6-cfg", ["inversion.steps=25", "inversion.cap=15"])
    assert authors.parse_setting("fmnist6-fast") == ("fmnist6-fast", [])
