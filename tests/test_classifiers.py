"""Classifier adapters: torchvision by name + weights file, timm, OpenOOD's ResNet18_32x32, any nn.Module.

Each adapter must give the same logits as the bare network on its own normalised input, expose penultimate
features consistent with its head, know its resolution, support Grad-CAM at its CAM layer, and refuse wrong files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from diffguard.backends.loaders import CheckpointError
from diffguard.classify.gradcam import grad_cam
from diffguard.classify.openood import CIFAR10_MEAN, CIFAR10_STD, openood_resnet18_32x32
from diffguard.classify.torchvision import torchvision_classifier
from diffguard.classify.wrap import module_classifier
from diffguard.nets.cifar_resnet import CifarResNet18


def _images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _normalised(x: torch.Tensor, mean, std) -> torch.Tensor:
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return ((x + 1) / 2 - m) / s


def _consistent(clf, x: torch.Tensor, expected_logits: torch.Tensor) -> None:
    with torch.no_grad():
        logits = clf.logits(x)
        both, feats = clf.logits_and_features(x)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both, logits, atol=1e-5, rtol=1e-5)
    assert feats.ndim == 2 and feats.shape[0] == x.shape[0]


def test_torchvision_resnet_from_a_weights_file(tmp_path: Path) -> None:
    net = torchvision.models.resnet18(num_classes=7).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    clf = torchvision_classifier("resnet18", tmp_path / "r18.pth", num_classes=7)
    assert clf.resolution == (224, 224) and clf.cam_layer is clf.model.layer4
    x = _images(2, 224)
    with torch.no_grad():
        expected = net(_normalised(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    _consistent(clf, x, expected)
    assert clf.features(x).shape == (2, 512)
    assert grad_cam(clf, x, torch.tensor([0, 3])).shape == (2, 7, 7)


def test_torchvision_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean"):
        torchvision_classifier("resnet81", None)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="wrong shapes"):
        torchvision_classifier("resnet18", tmp_path / "r18.pth", num_classes=1000)
    with pytest.raises(CheckpointError, match="missing"):
        torchvision_classifier("resnet34", tmp_path / "r18.pth", num_classes=10)


def test_authors_normalisation_wrapper_is_read(tmp_path: Path) -> None:
    net = torchvision.models.resnet18(num_classes=5).eval()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state.update({"normalize.mean": torch.tensor(mean), "normalize.std": torch.tensor(std)})
    save_file(state, str(tmp_path / "wrapped.safetensors"))
    clf = torchvision_classifier("resnet18", tmp_path / "wrapped.safetensors", num_classes=5, resolution=64)
    x = _images(2, 64)
    with torch.no_grad():
        expected = net(_normalised(x, mean, std))
    _consistent(clf, x, expected)


def test_openood_resnet18_32x32_checkpoint(tmp_path: Path) -> None:
    net = CifarResNet18(10).eval()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "best.ckpt")  # DataParallel
    clf = openood_resnet18_32x32(tmp_path / "best.ckpt")
    assert clf.resolution == (32, 32)
    x = _images(3, 32)
    with torch.no_grad():
        expected = net(_normalised(x, CIFAR10_MEAN, CIFAR10_STD))
    _consistent(clf, x, expected)
    assert clf.features(x).shape == (3, 512)
    assert grad_cam(clf, x, torch.tensor([1, 2, 3])).shape == (3, 4, 4)
    assert clf.logits(_images(1, 64)).shape == (1, 10)  # other sizes are resized to 32


def test_any_module_with_a_named_cam_layer(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    clf = module_classifier(net, tmp_path / "net.safetensors", num_classes=4, cam_layer="0", resolution=16,
                            mean=(0.5,) * 3, std=(0.5,) * 3)
    x = _images(2, 16)
    _consistent(clf, x, net(x).detach())
    assert clf.features(x).shape == (2, 8)
    with pytest.raises(ValueError, match="cam_layer"):
        module_classifier(net, None, num_classes=4, cam_layer="layer9", resolution=16)


def test_timm_model_from_a_weights_file(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet18", pretrained=False, num_classes=6).eval()
    save_file(net.state_dict(), str(tmp_path / "model.safetensors"))
    from diffguard.classify.timm import timm_classifier

    clf = timm_classifier("resnet18", tmp_path / "model.safetensors", num_classes=6, resolution=64)
    cfg = net.pretrained_cfg
    x = _images(2, 64)
    with torch.no_grad():
        expected = net(_normalised(x, cfg["mean"], cfg["std"]))
    _consistent(clf, x, expected)
    assert grad_cam(clf, x, torch.tensor([0, 5])).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="unknown timm architecture"):
        timm_classifier("resnet_does_not_exist", None)


def test_timm_folder_is_recognised(tmp_path: Path) -> None:
    """A timm folder (config.json with architecture / num_classes / pretrained_cfg + model.safetensors) as a plain
    classifier spec path."""
    timm = pytest.importorskip("timm")
    import json

    from diffguard.specs.model_specs import build_classifier

    net = timm.create_model("resnet18", pretrained=False, num_classes=4).eval()
    save_file(net.state_dict(), str(tmp_path / "model.safetensors"))
    cfg = {"architecture": "resnet18", "num_classes": 4,
           "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    clf = build_classifier(str(tmp_path))
    assert clf.resolution == (32, 32) and clf.num_classes == 4
    x = _images(2, 32)
    with torch.no_grad():
        expected = net(_normalised(x, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)))
    _consistent(clf, x, expected)
