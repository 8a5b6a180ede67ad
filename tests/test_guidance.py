"""Guidance wrappers: cutouts, Clean-Grad classifier guidance, CFG and Distinct Semantic Guidance (tiny, offline)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffguard.classify.adapter import ModuleClassifier
from diffguard.diffusion.ddim import ddim_step
from diffguard.guidance.cfg import cfg_eps, label_eps
from diffguard.guidance.clean_grad import class_log_prob, clean_grad_guidance, clip_eps
from diffguard.guidance.cutout import Cutouts
from diffguard.guidance.dsg import masked_cfg_eps

B, C, S, K = 4, 2, 8, 3
DT = torch.float64


def acp(T: int = 1000) -> torch.Tensor:
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=DT), 0)


def conv_eps(nonlinear: bool = False, seed: int = 0):
    """A convolutional eps function of x and t (tanh-wrapped when ``nonlinear``)."""
    w = torch.randn(C, C, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=DT) * 0.2

    def eps_fn(x, t, rows):
        out = F.conv2d(x, w.to(x), padding=1) + (t.to(x) / 1000).view(-1, 1, 1, 1)
        return torch.tanh(out) if nonlinear else out

    return eps_fn


def tiny_classifier(linear: bool = False, classes: int = K, seed: int = 0, dtype=DT) -> ModuleClassifier:
    torch.manual_seed(seed)
    if linear:
        net = nn.Sequential(nn.Flatten(), nn.Linear(C * S * S, classes))
        return ModuleClassifier(net.to(dtype), classes, "1", resolution=(S, S))
    net = nn.Sequential(nn.Conv2d(C, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, classes))
    return ModuleClassifier(net.to(dtype), classes, "0")


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, S, S, generator=g, dtype=DT), torch.tensor([300, 500, 500, 700])


def coefs(t):
    a = acp()[t].view(-1, 1, 1, 1)
    return a.sqrt(), (1 - a).sqrt()


ALL_ROWS = torch.arange(B)
LABELS = torch.tensor([0, 2, 1, 0])


# ----------------------------------------------------------------------------------------------------- cutouts
def test_cutout_windows_follow_authors_rng_order():
    cut = Cutouts(5)
    w = cut.windows(256, 256, 3, torch.Generator().manual_seed(100))
    g = torch.Generator().manual_seed(100)
    for k in range(5):
        side = int(torch.rand([], generator=g) * 32 + 224)
        ox = int(torch.randint(0, 256 - side + 1, (), generator=g))
        oy = int(torch.randint(0, 256 - side + 1, (), generator=g))
        assert w[k].tolist() == [[oy, ox, side]] * 3  # shared: the same window in every sample
    assert cut.output_size(256, 256) == 224


@pytest.mark.parametrize("shared", [True, False])
def test_cutout_windows_inside_and_sizes_in_range(shared):
    cut = Cutouts(50, size_range=(0.5, 0.9))
    gen = torch.Generator().manual_seed(1) if shared else gens(range(3))
    w = cut.windows(20, 30, 3, gen)
    top, left, side = w.unbind(-1)
    assert w.shape == (50, 3, 3)
    assert bool((side >= 10).all() and (side <= 18).all())
    assert bool((top >= 0).all() and (left >= 0).all() and (top + side <= 20).all() and (left + side <= 30).all())
    assert bool((w == w[:, :1]).all()) == shared


def test_cutout_crops_are_crop_major_resized_windows():
    x = torch.randn(2, C, 16, 16, dtype=DT)
    cut = Cutouts(3, size_range=(0.5, 1.0), out_size=5)
    crops, w = cut.with_windows(x, gens([3, 4]))
    assert crops.shape == (6, C, 5, 5)
    for k in range(3):
        for b in range(2):
            top, left, side = w[k, b].tolist()
            ref = F.interpolate(x[b:b + 1, :, top:top + side, left:left + side], size=(5, 5), mode="nearest")
            assert torch.equal(crops[k * 2 + b], ref[0])


def test_cutout_determinism_and_identity():
    x = torch.randn(2, C, 16, 16)
    cut = Cutouts(4, out_size=8, mode="bilinear")
    assert torch.equal(cut(x, gens([1, 2])), cut(x, gens([1, 2])))
    assert not torch.equal(cut.windows(16, 16, 2, gens([1, 2])), cut.windows(16, 16, 2, gens([5, 6])))
    for none in (Cutouts(0), Cutouts(None), Cutouts(-1)):
        assert none.identity and none(x) is x and none.windows(16, 16, 2).shape == (0, 2, 3)
    with pytest.raises(ValueError, match="size_range"):
        Cutouts(2, size_range=(0.9, 0.5))
    with pytest.raises(ValueError, match="mode"):
        Cutouts(2, mode="linear")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- clean-grad guidance
@pytest.mark.parametrize("gradient", ["mixed", "exact"])
def test_scale_zero_is_base_eps_bit_for_bit(gradient):
    x, t = batch()
    base = conv_eps()(x, t, ALL_ROWS)
    clf = tiny_classifier()
    plain = clean_grad_guidance(conv_eps(), clf, LABELS, acp(), scale=0.0, clip_x0=False, gradient=gradient)
    assert torch.equal(plain(x, t, ALL_ROWS), base)
    clipped = clean_grad_guidance(conv_eps(), clf, LABELS, acp(), scale=0.0, gradient=gradient)
    e_c = clipped(x, t, ALL_ROWS)
    assert torch.equal(e_c, clip_eps(x, base, *coefs(t)))
    sa, s1 = coefs(t)
    assert torch.allclose(e_c, (x - sa * ((x - s1 * base) / sa).clamp(-1, 1)) / s1, atol=1e-12)


@pytest.mark.parametrize("gradient", ["mixed", "exact"])
def test_guided_ddim_step_raises_log_prob(gradient):
    x, t = batch(1)
    t = torch.full((B,), 500)
    clf, y = tiny_classifier(linear=True, classes=2), torch.tensor([0, 1, 1, 0])
    a_t, a_prev = acp()[500], acp()[400]
    eps = conv_eps()

    def log_p_after_step(scale):
        guided = clean_grad_guidance(eps, clf, y, acp(), scale=scale, gradient=gradient, clip_x0=False)
        x_prev = ddim_step(x, guided(x, t, ALL_ROWS), a_t, a_prev)
        x0_hat = (x_prev - (1 - a_prev).sqrt() * eps(x_prev, torch.full((B,), 400), ALL_ROWS)) / a_prev.sqrt()
        return F.log_softmax(clf.logits(x0_hat), -1).gather(1, y[:, None]).squeeze(1)

    with torch.no_grad():
        assert bool((log_p_after_step(3.0) > log_p_after_step(0.0)).all())


def test_rows_subset_equals_full_batch_rows():
    x, t = batch()
    clf, cut = tiny_classifier(), Cutouts(3, size_range=(0.5, 1.0), out_size=6)
    full = clean_grad_guidance(conv_eps(), clf, LABELS, acp(), cutouts=cut, generators=gens(range(B)))
    out = full(x, t, ALL_ROWS)
    rows = torch.tensor([1, 3])
    part = clean_grad_guidance(conv_eps(), clf, LABELS, acp(), cutouts=cut, generators=gens(range(B)))
    assert torch.allclose(part(x[rows], t[rows], rows), out[rows], atol=1e-12)
    assert not torch.allclose(out, clip_eps(x, conv_eps()(x, t, ALL_ROWS), *coefs(t)))


class CountingClassifier:
    def __init__(self, inner: ModuleClassifier):
        self.inner, self.batches = inner, []

    def logits(self, x):
        self.batches.append(x.shape[0])
        return self.inner.logits(x)


@pytest.mark.parametrize("gradient", ["mixed", "exact"])
def test_unguided_rows_get_clipped_eps_and_skip_the_classifier(gradient):
    x, t = batch()
    y = torch.tensor([0, -1, 2, -1])
    clf = CountingClassifier(tiny_classifier())
    guided = clean_grad_guidance(conv_eps(), clf, y, acp(), cutouts=Cutouts(2, out_size=7),
                                 generators=torch.Generator().manual_seed(100), gradient=gradient)
    out = guided(x, t, ALL_ROWS)
    e_c = clip_eps(x, conv_eps()(x, t, ALL_ROWS), *coefs(t))
    assert torch.equal(out[y < 0], e_c[y < 0])
    assert not torch.allclose(out[y >= 0], e_c[y >= 0])
    assert clf.batches == [2 * 2]  # 2 crops of the 2 guided rows


def test_window_limits_guidance_to_timesteps():
    x, t = batch()
    guided = clean_grad_guidance(conv_eps(), tiny_classifier(), LABELS, acp(), window=(400, 600))
    out, e_c = guided(x, t, ALL_ROWS), clip_eps(x, conv_eps()(x, t, ALL_ROWS), *coefs(t))
    inside = (t >= 400) & (t <= 600)
    assert torch.equal(out[~inside], e_c[~inside]) and not torch.allclose(out[inside], e_c[inside])


def test_determinism_of_crops_through_guidance():
    x, t = batch()
    clf, cut = tiny_classifier(), Cutouts(2, size_range=(0.5, 1.0), out_size=5)

    def run(seed):
        return clean_grad_guidance(conv_eps(), clf, LABELS, acp(), cutouts=cut,
                                   generators=torch.Generator().manual_seed(seed))(x, t, ALL_ROWS)

    assert torch.equal(run(7), run(7)) and not torch.equal(run(7), run(8))


def test_exact_gradient_matches_finite_differences():
    x, t = batch(2)
    x, t, rows, y = x[:2], t[:2], ALL_ROWS[:2], LABELS[:2]
    clf, cut, eps = tiny_classifier(), Cutouts(2, size_range=(0.5, 1.0), out_size=4), conv_eps(nonlinear=True)
    sa, s1 = coefs(t)
    guided = clean_grad_guidance(eps, clf, y, acp(), scale=2.0, cutouts=cut, clip_x0=False, gradient="exact",
                                 generators=torch.Generator().manual_seed(3))
    g = (eps(x, t, rows) - guided(x, t, rows)) / s1 / 2.0

    def loss(z):
        return class_log_prob(clf, (z - s1 * eps(z, t, rows)) / sa, y, cut, torch.Generator().manual_seed(3))

    flat = g.abs().flatten().argsort(descending=True)
    idx = flat[:4].tolist() + flat[-2:].tolist()  # the largest entries and two (possibly zero) smallest
    assert float(g.abs().max()) > 1e-3
    with torch.no_grad():
        for i in idx:
            d = torch.zeros(x.numel(), dtype=DT)
            d[i] = 1e-6
            d = d.view_as(x)
            assert abs(float((loss(x + d) - loss(x - d)) / 2e-6) - float(g.flatten()[i])) < 1e-8


def test_mixed_gradient_is_the_gradient_at_x_tilde():
    x, t = batch()
    clf = tiny_classifier()
    eps = conv_eps()
    out = clean_grad_guidance(eps, clf, LABELS, acp(), scale=3.0, clip_x0=False)(x, t, ALL_ROWS)
    sa, s1 = coefs(t)
    e = eps(x, t, ALL_ROWS)
    x_tilde = (s1 * (x - s1 * e) / sa + (1 - s1) * x).requires_grad_(True)
    (ref,) = torch.autograd.grad(class_log_prob(clf, x_tilde, LABELS, Cutouts(0), None), x_tilde)
    assert torch.allclose(out, e - s1 * 3.0 * ref, atol=1e-12)
    no_x0 = clean_grad_guidance(eps, clf, LABELS, acp(), clip_x0=False, use_x0_hat=False)(x, t, ALL_ROWS)
    x_leaf = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(class_log_prob(clf, x_leaf, LABELS, Cutouts(0), None), x_leaf)
    assert torch.allclose(no_x0, e - s1 * 3.0 * ref, atol=1e-12)


def test_classifier_parameters_get_no_grad_and_options_are_checked():
    x, t = batch()
    clf = tiny_classifier()
    with torch.no_grad():
        for gradient in ("mixed", "exact"):
            clean_grad_guidance(conv_eps(), clf, LABELS, acp(), gradient=gradient)(x, t, ALL_ROWS)
    assert all(p.grad is None for p in clf.parameters())
    with pytest.raises(ValueError, match="gradient"):
        clean_grad_guidance(conv_eps(), clf, LABELS, acp(), gradient="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generators"):
        clean_grad_guidance(conv_eps(), clf, LABELS, acp(), generators=gens([1]))


# ---------------------------------------------------------------------------------------------------- CFG / DSG
def label_model(x, t, y):
    """A conditional eps model: nonlinear in x, dependent on the label (null = K) and t."""
    return torch.sin(x) * (1 + y.to(x).view(-1, 1, 1, 1)) + (t.to(x) / 1000).view(-1, 1, 1, 1)


def test_cfg_scale_one_is_conditional_and_masks_reduce_to_cfg_or_uncond():
    x, t = batch()
    cond = label_model(x, t, LABELS)
    uncond = label_model(x, t, torch.full((B,), K))
    assert torch.allclose(cfg_eps(label_model, LABELS, K, 1.0)(x, t, ALL_ROWS), cond, atol=1e-12)
    assert torch.equal(cfg_eps(label_model, LABELS, K, 0.0)(x, t, ALL_ROWS), uncond)
    cfg = cfg_eps(label_model, LABELS, K, 7.0)(x, t, ALL_ROWS)
    ones, zeros = torch.ones(B, 1, S, S), torch.zeros(B, 1, S, S)
    assert torch.equal(masked_cfg_eps(label_model, LABELS, K, 7.0, ones)(x, t, ALL_ROWS), cfg)
    assert torch.equal(masked_cfg_eps(label_model, LABELS, K, 7.0, None)(x, t, ALL_ROWS), cfg)
    assert torch.equal(masked_cfg_eps(label_model, LABELS, K, 7.0, zeros)(x, t, ALL_ROWS), uncond)


def test_masked_cfg_mixes_per_pixel_and_selects_rows():
    x, t = batch()
    mask = (torch.rand(B, 1, S, S, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    fn = masked_cfg_eps(label_model, LABELS, K, 5.0, mask)
    out = fn(x, t, ALL_ROWS)
    cfg = cfg_eps(label_model, LABELS, K, 5.0)(x, t, ALL_ROWS)
    uncond = label_model(x, t, torch.full((B,), K))
    inside = mask.expand_as(x) > 0.5
    assert torch.equal(out[inside], cfg[inside]) and torch.equal(out[~inside], uncond[~inside])
    rows = torch.tensor([2, 0])
    assert torch.equal(fn(x[rows], t[rows], rows), out[rows])
    with pytest.raises(ValueError, match="diffusion resolution"):
        masked_cfg_eps(label_model, LABELS, K, 5.0, torch.ones(B, 1, 4, 4))(x, t, ALL_ROWS)


# ----------------------------------------------------------------------------------- every factory, generic checks
def factories(dtype=DT):
    clf, cut = tiny_classifier(dtype=dtype), Cutouts(2, size_range=(0.5, 1.0), out_size=6)
    mask = torch.ones(B, C, S, S)
    return {
        "cfg": lambda: cfg_eps(label_model, LABELS, K, 3.0),
        "label": lambda: label_eps(label_model, LABELS),
        "masked_cfg": lambda: masked_cfg_eps(label_model, LABELS, K, 3.0, mask),
        "clean_grad_mixed": lambda: clean_grad_guidance(conv_eps(), clf, LABELS, acp(), cutouts=cut,
                                                        generators=torch.Generator().manual_seed(0)),
        "clean_grad_exact": lambda: clean_grad_guidance(conv_eps(), clf, LABELS, acp(), cutouts=cut,
                                                        generators=gens(range(B)), gradient="exact"),
        "clean_grad_no_x0": lambda: clean_grad_guidance(conv_eps(), clf, LABELS, acp(), use_x0_hat=False),
    }


@pytest.mark.parametrize("name", list(factories(torch.float32)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_guidance_factory_shape_finite_device_dtype_determinism(name, dtype):
    x, t = batch()
    x = x.to(dtype)
    rows = torch.tensor([3, 1, 0])
    fn = factories(dtype)[name]()
    out = fn(x[rows], t[rows], rows)
    assert out.shape == (3, C, S, S) and out.dtype == dtype and out.device == x.device
    assert bool(torch.isfinite(out).all()) and not out.requires_grad
    assert torch.equal(factories(dtype)[name]()(x[rows], t[rows], rows), out)
