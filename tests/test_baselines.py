"""Baselines: golden values on hand-made tensors, limiting-case properties, and a registry-wide contract test."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from diffguard.classify.adapter import ModuleClassifier
from diffguard.detectors.detector import ClassifierOutputs, classifier_outputs, create_baseline, list_baselines
from diffguard.detectors.ebo import EBO
from diffguard.detectors.ensemble import DeepEnsemble, fmnist6_ensemble
from diffguard.detectors.knn import KNN
from diffguard.detectors.mc_dropout import MCDropout
from diffguard.detectors.mds import MDS
from diffguard.detectors.mls import MLS
from diffguard.detectors.msp import MSP
from diffguard.detectors.odin import ODIN
from diffguard.detectors.vim import ViM
from diffguard.nets.resnet import SmallResNet


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second thread only adds contention on the shared machine (9 s vs 0.05 s for DiffNB)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def outs(logits, features=None, labels=None, ids=None) -> ClassifierOutputs:
    logits = torch.as_tensor(logits, dtype=torch.float32)
    features = torch.zeros(logits.shape[0], 1) if features is None else torch.as_tensor(features, dtype=torch.float32)
    return ClassifierOutputs(logits, features, None if labels is None else torch.as_tensor(labels), ids)


def tiny_classifier(num_classes: int = 3, seed: int = 0) -> ModuleClassifier:
    torch.manual_seed(seed)
    net = SmallResNet(num_classes, in_channels=1, width=2, blocks=(1, 1, 1, 1))
    return ModuleClassifier(net, num_classes, "layer4")


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------- logit baselines: MSP, EBO, MLS ----------

def test_msp_golden():
    # softmax(0, 0) max = 1/2; softmax(ln 3, 0) = (3/4, 1/4); softmax(ln 2, 0, 0) = (2/4, 1/4, 1/4)
    s = MSP().score(outs([[0.0, 0.0, -1e9], [math.log(3), 0.0, -1e9], [math.log(2), 0.0, 0.0]]))
    assert s.dtype == torch.float64
    assert s.tolist() == pytest.approx([-0.5, -0.75, -0.5], abs=1e-7)


def test_ebo_golden():
    # -lse(0, 0) = -ln 2; -lse(ln 3, 0) = -ln 4; T = 2: -2 lse(ln 4 / 2, 0) = -2 ln(2 + 1) = -2 ln 3
    assert EBO().score(outs([[0.0, 0.0], [math.log(3), 0.0]])).tolist() == pytest.approx(
        [-math.log(2), -math.log(4)], abs=1e-6)
    assert EBO(temperature=2.0).score(outs([[math.log(4), 0.0]])).item() == pytest.approx(-2 * math.log(3), abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        EBO(temperature=0)


def test_mls_golden():
    assert MLS().score(outs([[1.0, -2.0, 0.5], [-1.0, -3.0, -2.0]])).tolist() == [-1.0, 1.0]


# ---------- ODIN ----------

def test_odin_golden_units():
    # A linear "network" on 1x1x2 images with std 0.25: x_n = ((x + 1)/2 - 0.5)/0.25 = 2x, z = diag(2, 1) x_n.
    # x = (0.3, 0.5): x_n = (0.6, 1.0), z = (1.2, 1.0), y_hat = 0; dCE/dz = (p0 - 1, p1)/T -> dCE/dx_n signs (-, +).
    # OpenOOD: x_n~ = x_n - eps * sign / std = (0.6 + 4 eps, 1.0 - 4 eps) = (0.8, 0.8) for eps = 0.05,
    # z~ = (1.6, 0.8); T = 2: max softmax(0.8, 0.4) = 1 / (1 + e^-0.4).
    lin = nn.Linear(2, 2, bias=False)
    lin.weight.data = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    clf = ModuleClassifier(nn.Sequential(nn.Flatten(), lin), 2, "1", mean=(0.5,), std=(0.25,))
    x = torch.tensor([0.3, 0.5]).view(1, 1, 1, 2)
    s = ODIN(clf, temperature=2.0, eps=0.05).score_images(x, torch.tensor([0]))
    assert s.item() == pytest.approx(-1 / (1 + math.exp(-0.4)), abs=1e-6)


def test_odin_eps0_t1_is_msp():
    clf, x = tiny_classifier(), images()
    ref = MSP().score(classifier_outputs(clf, x))
    got = ODIN(clf, temperature=1.0, eps=0.0).score_images(x, torch.arange(6))
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    assert not any(p.grad is not None for p in clf.parameters())  # no gradients left on the classifier


# ---------- KNN ----------

def test_knn_golden():
    # normalised bank: (1,0), (0,1), (1,0). Query (0,2) -> (0,1): distances sqrt2, 0, sqrt2.
    # Query (1,1) -> (1,1)/sqrt2: distance to (1,0) and to (0,1) is sqrt(2 - sqrt2).
    train = outs([[0.0]] * 3, [[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    q = outs([[0.0]] * 2, [[0.0, 2.0], [1.0, 1.0]])
    assert KNN(k=1).fit(train).score(q).tolist() == pytest.approx([0.0, math.sqrt(2 - math.sqrt(2))], abs=1e-7)
    assert KNN(k=2).fit(train).score(q).tolist() == pytest.approx([math.sqrt(2), math.sqrt(2 - math.sqrt(2))],
                                                                  abs=1e-7)
    assert KNN(k=3, chunk=1).fit(train).score(q).tolist() == pytest.approx([math.sqrt(2), 0.765367], abs=1e-6)
    with pytest.raises(ValueError, match="larger than"):
        KNN(k=4).fit(train)


def test_knn_k1_on_train_points_is_zero():
    feats = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    train = outs(torch.zeros(40, 2), feats)
    assert KNN(k=1, chunk=7).fit(train).score(train).abs().max().item() < 1e-6


# ---------- MDS ----------

def _cross(center, a, b):
    cx, cy = center
    return [[cx + a, cy], [cx - a, cy], [cx, cy + b], [cx, cy - b]]


def test_mds_golden():
    # class 0 around (0, 0), class 1 around (5, 0), points +-2 along x and +-sqrt2 along y:
    # class-centred x offsets +-2 (4 rows, 4 each -> 16), y offsets +-sqrt2 (4 rows, 2 each -> 8), over 8 rows:
    # shared covariance diag(16 / 8, 8 / 8) = diag(2, 1), precision diag(1/2, 1).
    # Query (2, 1): to class 0: 4/2 + 1 = 3; to class 1: 9/2 + 1 = 5.5 -> 3.
    feats = _cross((0, 0), 2.0, math.sqrt(2)) + _cross((5, 0), 2.0, math.sqrt(2))
    train = outs(torch.zeros(8, 2), feats, [0] * 4 + [1] * 4)
    det = MDS().fit(train)
    torch.testing.assert_close(det.precision, torch.diag(torch.tensor([0.5, 1.0], dtype=torch.float64)))
    assert det.score(outs(torch.zeros(2, 2), [[2.0, 1.0], [4.0, 0.0]])).tolist() == pytest.approx([3.0, 0.5])


def test_mds_identity_covariance_is_squared_euclidean():
    feats = _cross((0, 0), math.sqrt(2), math.sqrt(2)) + _cross((5, 1), math.sqrt(2), math.sqrt(2))
    det = MDS().fit(outs(torch.zeros(8, 2), feats, [0] * 4 + [1] * 4))
    torch.testing.assert_close(det.precision, torch.eye(2, dtype=torch.float64))
    q = torch.randn(10, 2, generator=torch.Generator().manual_seed(3))
    means = torch.tensor([[0.0, 0.0], [5.0, 1.0]])
    expect = torch.cdist(q, means).pow(2).amin(dim=1).double()
    torch.testing.assert_close(det.score(outs(torch.zeros(10, 2), q)), expect, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="labelled"):
        MDS().fit(outs(torch.zeros(8, 2), feats))
    with pytest.raises(ValueError, match="no ID-train rows"):
        MDS().fit(outs(torch.zeros(8, 3), feats, [0] * 4 + [1] * 4))


# ---------- ViM ----------

def _vim_setup():
    # W = [[1,0,0],[0,1,0]], b = (1, -2): pinv(W) = W^T, u = -W^T b = (-1, 2, 0).
    # Train h - u = (+-3, 0, 1), (0, +-3, -1): covariance diag(4.5, 4.5, 1) -> dim 2 keeps e1, e2, P_perp = e3,
    # residual |(h - u)_3| = 1 for every train row. Train logits = (h - u) W^T (the bias cancels u):
    # max logits 3, 0, 3, 0 -> mean 1.5 -> alpha = 1.5 / 1 = 1.5.
    lin = nn.Linear(3, 2)
    lin.weight.data = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    lin.bias.data = torch.tensor([1.0, -2.0])
    u = torch.tensor([-1.0, 2.0, 0.0])
    centred = torch.tensor([[3.0, 0, 1], [-3, 0, 1], [0, 3, -1], [0, -3, -1]])
    h = centred + u
    return SimpleNamespace(head=lin), outs(lin(h).detach(), h), u


def test_vim_golden():
    clf, train, u = _vim_setup()
    det = ViM(clf, dim=2).fit(train)
    torch.testing.assert_close(det.u, u.double())
    assert det.alpha == pytest.approx(1.5)
    assert det.params()["dim"] == 2
    # Query h - u = (1, 0, 2): logits (1, 0); score = 1.5 * 2 - ln(e + 1).
    hq = torch.tensor([[1.0, 0.0, 2.0]]) + u
    s = det.score(outs([[1.0, 0.0]], hq))
    assert s.item() == pytest.approx(3 - math.log(math.e + 1), abs=1e-6)


def test_vim_dim_rule():
    clf, train, _ = _vim_setup()
    assert ViM(clf).fit(train).params() == {"dim": 1, "dim_rule": "min(256, D // 2)", "alpha": pytest.approx(
        ViM(clf, dim=1).fit(train).alpha)}
    with pytest.raises(ValueError, match="residual space would be empty"):
        ViM(clf, dim=3).fit(train)


# ---------- MC-Dropout ----------

def test_mc_dropout_p0_is_msp_and_per_sample_deterministic():
    lin = nn.Linear(4, 3)
    feats = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    out = outs(lin(feats).detach(), feats, ids=torch.arange(100, 112))
    clf = SimpleNamespace(head=lin)
    torch.testing.assert_close(MCDropout(clf, p=0.0).score(out), MSP().score(out), atol=1e-6, rtol=0)
    det = MCDropout(clf, p=0.5, seed=3)
    full = det.score(out)
    assert not torch.allclose(full, MSP().score(out))
    sub = ClassifierOutputs(out.logits[[7, 2]], out.features[[7, 2]], None, out.ids[[7, 2]])
    torch.testing.assert_close(det.score(sub), full[[7, 2]])  # a row's score ignores its batch
    assert not torch.equal(MCDropout(clf, p=0.5, seed=4).score(out), full)


# ---------- Deep Ensemble ----------

class _Const:
    def __init__(self, logits):
        self.value = torch.tensor(logits)

    def logits(self, x):
        return self.value.expand(x.shape[0], -1)


def test_ensemble_golden_and_identical_members():
    # mean of (2, 0) and (0, 0) = (1, 0): -e / (e + 1)
    x = images(2)
    s = DeepEnsemble(members=[_Const([2.0, 0.0]), _Const([0.0, 0.0])]).score_images(x, torch.arange(2))
    assert s.tolist() == pytest.approx([-math.e / (math.e + 1)] * 2)
    clf = tiny_classifier()
    torch.testing.assert_close(DeepEnsemble(clf, members=[clf, clf, clf]).score_images(x, torch.arange(2)),
                               MSP().score(classifier_outputs(clf, x)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=">= 2"):
        DeepEnsemble(clf, members=[clf])


def test_ensemble_folders_finds_seed_siblings(tmp_path):
    from diffguard.detectors.ensemble import ensemble_folders

    for name in ("fmnist6-classifier-s10", "fmnist6-classifier-s2", "fmnist6-classifier-sx", "other-s1"):
        (tmp_path / name).mkdir()
    got = [p.name for p in ensemble_folders(tmp_path)]
    assert got == ["fmnist6-classifier", "fmnist6-classifier-s2", "fmnist6-classifier-s10"]


def test_classifier_head_accessor():
    clf = tiny_classifier()
    assert clf.head is clf.model.fc
    clf = ModuleClassifier(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)), 2, "1")
    with pytest.raises(ValueError, match="head="):
        _ = clf.head
    with pytest.raises(ValueError, match="head="):
        ViM(clf)


def test_fmnist6_ensemble_needs_two(tmp_path):
    with pytest.raises(ValueError, match=">= 2 classifiers"):
        fmnist6_ensemble([tmp_path / "only-one"])


# ---------- registry contract ----------

def test_registry_names_and_alias():
    assert list_baselines() == sorted(["msp", "odin", "ebo", "mls", "knn", "vim", "mds", "mc_dropout", "ensemble",
                                       "diffnb"])
    assert isinstance(create_baseline("dropout", SimpleNamespace(head=nn.Linear(2, 2))), MCDropout)
    with pytest.raises(KeyError, match="'knn'"):
        create_baseline("knm", None)


# ---------- DiffNB ----------

@pytest.fixture(scope="module")
def tiny_backend():
    from diffusers import UNet2DModel

    from diffguard.backends.pixel_unet import PixelBackend

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=4).eval()
    acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    return PixelBackend(unet, acp, null_label=3, channels=1)


def _diffnb(backend, **kw):
    from diffguard.detectors.diffnb import DiffNB

    kw = {"noise_levels": (0, 40, 80), "steps": 25, "repeats": 2, **kw}
    return DiffNB(tiny_classifier(), backend, **kw)


def test_diffnb_deterministic_and_batch_invariant(tiny_backend):
    det, x, ids = _diffnb(tiny_backend), images(4), torch.tensor([10, 11, 12, 13])
    g = det.global_scores(x, ids)
    assert g.shape == (4, 3) and g.dtype == torch.float64 and torch.isfinite(g).all()
    assert (g[:, 0] == 0).all() and (g[:, 1:] > 0).all()
    torch.testing.assert_close(det.score_images(x, ids), g[:, -1])
    torch.testing.assert_close(det.global_scores(x, ids), g)  # same call, same numbers
    perm = torch.tensor([2, 0, 3])
    torch.testing.assert_close(det.global_scores(x[perm], ids[perm]), g[perm], atol=1e-5, rtol=0)
    other_seed = _diffnb(tiny_backend, seed=1).global_scores(x, ids)
    assert not torch.allclose(other_seed, g)


def test_diffnb_base_score_needs_only_the_end_levels(tiny_backend):
    """The benchmark computes only levels (0, t_max): the base score must equal the full run's last column."""
    x, ids = images(3), torch.tensor([4, 5, 6])
    full = _diffnb(tiny_backend).global_scores(x, ids)
    ends = _diffnb(tiny_backend, noise_levels=(0, 80)).score_images(x, ids)
    torch.testing.assert_close(ends, full[:, -1], atol=1e-6, rtol=0)


def test_diffnb_single_level_is_zero_and_validation(tiny_backend):
    x = images(3)
    assert (_diffnb(tiny_backend, noise_levels=(0,)).score_images(x, torch.arange(3)) == 0).all()
    rec = _diffnb(tiny_backend, repeats=1).reconstructions(x, torch.arange(3))
    assert rec.shape == (3, 1, 3, 1, 8, 8) and rec.abs().max() <= 1
    with pytest.raises(ValueError, match="multiples of the grid stride 40"):
        _diffnb(tiny_backend, noise_levels=(0, 50))
    with pytest.raises(ValueError, match="increasing"):
        _diffnb(tiny_backend, noise_levels=(40, 0))
    with pytest.raises(ValueError, match="class-conditional"):
        _diffnb(SimpleNamespace(null_label=None, alphas_cumprod=tiny_backend.alphas_cumprod))


def test_diffnb_params_report_cfg_scale(tiny_backend):
    assert _diffnb(tiny_backend).params()["cfg_scale"] == 3.0  # beta = 2 -> our scale 1 + beta


# ---------- every registered baseline: shape, dtype, finiteness, determinism on CPU ----------

def _contract_params(name, backend):
    return {"knn": {"k": 3}, "ensemble": {"members": [tiny_classifier(seed=0), tiny_classifier(seed=5)]},
            "diffnb": {"backend": backend, "noise_levels": (0, 40), "steps": 25, "repeats": 1}}.get(name, {})


@pytest.mark.parametrize("name", list_baselines())
def test_every_baseline_contract(name, tiny_backend):
    clf = tiny_classifier()
    x_train, x_test = images(12, seed=2), images(5, seed=3)
    train = classifier_outputs(clf, x_train, labels=torch.arange(12) % 3, ids=torch.arange(12))
    test = classifier_outputs(clf, x_test, ids=torch.arange(100, 105))
    det = create_baseline(name, clf, **_contract_params(name, tiny_backend))
    assert det.name == name and det.display_name
    assert det.fit(train) is det
    run = (lambda: det.score_images(x_test, test.ids)) if det.needs.images else (lambda: det.score(test))
    s = run()
    assert s.shape == (5,) and s.dtype == torch.float64 and torch.isfinite(s).all()
    torch.testing.assert_close(run(), s)
    json.dumps(det.params())
