"""Grad-CAM and the DSG mask on hand-computable cases (tiny, offline)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffguard.classify.adapter import ModuleClassifier
from diffguard.classify.gradcam import cam_mask, grad_cam

C, K, H, W = 3, 5, 6, 7
DT = torch.float64


def gap_classifier(inplace_relu: bool = False) -> ModuleClassifier:
    """conv (the CAM layer) -> [ReLU(inplace)] -> global average pool -> linear. mean = std = 0.5 keeps x as is."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(C, 4, 3, padding=1)] + ([nn.ReLU(inplace=True)] if inplace_relu else [])
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)).to(DT)
    return ModuleClassifier(net, K, "0")


def inputs():
    x = torch.rand(2, C, H, W, generator=torch.Generator().manual_seed(1), dtype=DT) * 2 - 1
    return x, torch.tensor([1, 4])


def test_grad_cam_weights_are_fc_weights_over_area():
    clf, (x, y) = gap_classifier(), inputs()
    acts = clf.model[0](x)  # preprocess is the identity for mean = std = 0.5
    fc = clf.model[-1].weight  # (K, 4)
    weights = fc[y] / (H * W)  # d logit_y / d A_c[i, j] is fc[y, c] / (h w) everywhere, so is its spatial mean
    expected = F.relu((weights[:, :, None, None] * acts).sum(1))
    cam = grad_cam(clf, x, y)
    assert cam.shape == (2, H, W) and not cam.requires_grad
    assert torch.allclose(cam, expected, atol=1e-12)
    assert bool((cam > 0).any()) and bool((cam == 0).any())  # the ReLU acts on this example


def test_grad_cam_uses_layer_output_before_inplace_ops():
    clf, (x, y) = gap_classifier(inplace_relu=True), inputs()
    acts = clf.model[0](x)
    fc = clf.model[-1].weight
    grads = fc[y][:, :, None, None] / (H * W) * (acts > 0)  # gradient through the in-place ReLU
    expected = F.relu((grads.mean((2, 3), keepdim=True) * acts).sum(1))
    assert torch.allclose(grad_cam(clf, x, y), expected, atol=1e-12)


def test_grad_cam_leaves_no_grad_and_no_hooks_even_in_no_grad():
    clf, (x, y) = gap_classifier(), inputs()
    with torch.no_grad():
        cam = grad_cam(clf, x, y)
    assert torch.isfinite(cam).all()
    assert all(p.grad is None for p in clf.parameters())
    assert len(clf.cam_layer._forward_hooks) == 0
    for p in clf.parameters():  # a frozen classifier works too
        p.requires_grad_(False)
    assert torch.allclose(grad_cam(clf, x, y), cam)


def test_grad_cam_targets_the_raw_logit_per_sample():
    clf, (x, _) = gap_classifier(), inputs()
    both = grad_cam(clf, x, torch.tensor([2, 3]))
    assert torch.allclose(both[:1], grad_cam(clf, x[:1], torch.tensor([2])), atol=1e-12)
    assert torch.allclose(both[1:], grad_cam(clf, x[1:], torch.tensor([3])), atol=1e-12)


def bilinear_2_to_4() -> torch.Tensor:
    """Source coordinates of bilinear (half-pixel) 2 -> 4 upsampling: (i + 0.5) / 2 - 0.5, clamped to [0, 1]."""
    return torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=DT)


def test_cam_mask_upsamples_normalises_and_thresholds():
    cam = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]], dtype=DT)
    v = bilinear_2_to_4()
    scaled = (2 * v[:, None] + v[None, :]) / 3  # min 0, max 3; values are multiples of 1/12
    mask = cam_mask(cam, (4, 4), cut=0.45)
    assert mask.shape == (1, 1, 4, 4) and mask.dtype == DT
    assert torch.equal(mask[0, 0], (scaled > 0.45).to(DT))
    inverted = cam_mask(cam, (4, 4), cut=-0.45)
    assert torch.equal(inverted[0, 0], 1 - mask[0, 0])
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_cam_mask_is_per_image_and_resized_nearest():
    cam = torch.rand(1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    both = torch.cat([cam, 10 * cam + 5])
    full = cam_mask(both, (8, 8), cut=0.3)
    assert torch.equal(full[0], full[1])  # min-max per image removes scale and offset
    assert 0 < float(full.mean()) < 1
    small = cam_mask(both, (8, 8), out_size=(4, 4), cut=0.3)
    assert torch.equal(small, full[:, :, ::2, ::2])  # nearest 8 -> 4 takes pixels 0, 2, 4, 6


@pytest.mark.parametrize("cut, value", [(0.3, 0.0), (-0.3, 1.0)])
def test_cam_mask_of_a_constant_cam(cut, value):
    mask = cam_mask(torch.full((2, 3, 3), 0.7), (5, 5), cut=cut)
    assert torch.equal(mask, torch.full((2, 1, 5, 5), value))


def test_cam_mask_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        cam_mask(torch.zeros(1, 1, 3, 3), (4, 4))
