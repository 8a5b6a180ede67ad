"""Device placement of a run: resolving the setting and moving models held by diffguard's wrappers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffguard.devices import resolve_device, to_device


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:1" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", local_rank=1) == torch.device(expected)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_to_device_reaches_modules_inside_wrappers(tiny_models: tuple[Path, Path]) -> None:
    from diffguard.backends.pixel_unet import PixelBackend
    from diffguard.classify.adapter import fmnist6_classifier

    backend = to_device(PixelBackend.from_folder(str(tiny_models[1])), torch.device("meta"))
    assert all(p.device.type == "meta" for p in backend.unet.parameters())
    clf = to_device(fmnist6_classifier(str(tiny_models[0])), torch.device("meta"))
    assert all(p.device.type == "meta" for p in clf.parameters())
    assert to_device([1], torch.device("meta")) == [1]  # foreign objects are left alone
