"""The CompVis latent-diffusion loader: a class-conditional checkpoint saved as PyTorch Lightning does
(``{"state_dict": ...}`` in a ``.ckpt``), loaded without its YAML, and two images scored; plus clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffguard.backends.compvis_ldm import ldm_alphas_cumprod, load_compvis_ldm
from diffguard.backends.loaders import CheckpointError, read_state_dict

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors-ldm" / "C_ldm.weights.safetensors"
needs_c = pytest.mark.skipif(not FIXTURE.is_file(), reason=f"original-layout LDM weights not found at {FIXTURE}")


def test_ldm_linear_schedule() -> None:
    acp = ldm_alphas_cumprod()
    assert acp[0].item() == pytest.approx(1 - 0.0015, rel=1e-6) and bool((acp[1:] < acp[:-1]).all())


def test_not_an_ldm_checkpoint() -> None:
    with pytest.raises(CheckpointError, match="class-conditional LatentDiffusion"):
        load_compvis_ldm({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 3, 3, 3)})


@needs_c
def test_kl_first_stage_is_refused_clearly() -> None:
    state = {k: v for k, v in read_state_dict(FIXTURE).items() if "quantize" not in k}
    with pytest.raises(CheckpointError, match="only VQ first stages"):
        load_compvis_ldm(state)


@needs_c
def test_tiny_compvis_ldm_checkpoint_end_to_end(tmp_path: Path) -> None:
    import torchvision

    from diffguard.classify.torchvision import torchvision_classifier
    from diffguard.detectors.diffguard_presets import diffguard_detector

    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": read_state_dict(FIXTURE), "global_step": 0}, ckpt)  # Lightning's nesting
    backend = load_compvis_ldm(ckpt)  # no YAML: layout from the weights, 1 head as in cin256-v2
    assert backend.null_label == 10 and backend.scale_factor == 1.0
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert backend.encode(x).shape == (2, 3, 16, 16)  # VQ-f4
    clf_file = tmp_path / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file(torchvision.models.resnet18(num_classes=10).state_dict(), str(clf_file))
    clf = torchvision_classifier("resnet18", clf_file, num_classes=10, resolution=64)
    det = diffguard_detector(clf, backend, "ldm", steps=3, distances=("l2",))
    res = det.analyze(x)
    assert res.score.shape == (2,) and bool(torch.isfinite(res.score).all())
    assert res.synthesis.shape == x.shape and float(res.synthesis.abs().max()) <= 1
