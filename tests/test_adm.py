"""The guided-diffusion (ADM) loader: layout inference, key conversion, safe loading and clear errors, and a tiny
end-to-end run (an original-layout checkpoint saved as guided-diffusion does, loaded, two images scored)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffguard.backends.adm import AdmConfig, adm_alphas_cumprod, adm_backend, convert_adm_state_dict, load_adm_unet
from diffguard.backends.loaders import CheckpointError, read_state_dict

AUTHORS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors"
A1 = AUTHORS / "A1_unet32_uncond.weights.safetensors"
needs_a1 = pytest.mark.skipif(not A1.is_file(), reason=f"original-layout ADM weights not found at {A1}")


class _NotATensor:
    pass


def test_linear_and_cosine_schedules() -> None:
    lin = adm_alphas_cumprod("linear", 1000)
    assert lin.dtype == torch.float64 and lin.shape == (1000,)
    assert lin[0].item() == pytest.approx(1 - 1e-4) and lin[-1].item() < 1e-4
    cos = adm_alphas_cumprod("cosine", 100)
    assert bool((cos[1:] < cos[:-1]).all()) and 0 < cos[-1] < 1e-3
    with pytest.raises(ValueError, match="linear"):
        adm_alphas_cumprod("sigmoid")  # type: ignore[arg-type]


def test_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1), "obj": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="refuses to execute pickles"):
        read_state_dict(path)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="never downloads"):
        read_state_dict(tmp_path / "missing.pt")


def test_nested_state_dict_is_unwrapped(tmp_path: Path) -> None:
    torch.save({"state_dict": {"a": torch.ones(2)}, "epoch": 3}, tmp_path / "m.ckpt")
    assert list(read_state_dict(tmp_path / "m.ckpt")) == ["a"]


def test_not_an_adm_state_dict() -> None:
    with pytest.raises(CheckpointError, match="not a guided-diffusion"):
        load_adm_unet({"conv.weight": torch.zeros(3, 3, 3, 3)})


def test_qkv_split_follows_the_head_layout() -> None:
    cfg = AdmConfig(3, 32, 3, 1, (1,), (0,), num_head_channels=8)
    qkv = torch.arange(96.0)[:, None, None]  # 4 heads of 8 channels, legacy rows (head, [q, k, v], channel)
    out = convert_adm_state_dict({"middle_block.1.qkv.weight": qkv}, cfg)
    q = out["mid_block.attentions.0.to_q.weight"].flatten()
    assert q[:8].tolist() == list(range(8)) and q[8:16].tolist() == list(range(24, 32))
    new = convert_adm_state_dict({"middle_block.1.qkv.weight": qkv}, AdmConfig(3, 32, 3, 1, (1,), (0,), 8,
                                                                            new_attention_order=True))
    assert new["mid_block.attentions.0.to_k.weight"].flatten().tolist() == list(range(32, 64))


@needs_a1
def test_wrong_shapes_and_missing_keys_are_reported() -> None:
    state = read_state_dict(A1)
    missing = {k: v for k, v in state.items() if k != "out.2.bias"}
    with pytest.raises(CheckpointError, match="missing 1 key"):
        load_adm_unet(missing, num_head_channels=8)
    bad = dict(state)
    bad["time_embed.2.weight"] = bad["time_embed.2.weight"][:, :64]
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_adm_unet(bad, num_head_channels=8)


@needs_a1
def test_tiny_adm_checkpoint_end_to_end(tmp_path: Path) -> None:
    import torchvision

    from diffguard.classify.torchvision import torchvision_classifier
    from diffguard.guidance.clean_grad import ClassifierGuidance
    from diffguard.detectors.diffguard_presets import diffguard_detector

    ckpt = tmp_path / "32x32_diffusion_uncond.pt"
    torch.save(read_state_dict(A1), ckpt)  # a plain state dict in ADM's key layout, as guided-diffusion saves it
    backend = adm_backend(ckpt, resolution=32, num_head_channels=8)
    assert backend.unet.config.out_channels == 6 and backend.channels == 3  # learned sigma: eps is channels 0-2
    clf_file = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), clf_file)
    clf = torchvision_classifier("resnet18", clf_file, num_classes=10, resolution=32)
    det = diffguard_detector(clf, backend, "gdm", steps=10, early_stop_steps=2, dists_threshold=None,
                          distances=("l2",), guidance=ClassifierGuidance(scale=3.0, cutouts=2, crop_out=32))
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    res = det.analyze(x)
    assert res.score.shape == (2,) and bool(torch.isfinite(res.score).all())
    assert res.synthesis.shape == x.shape  # made at 32 px, resized back to the input size
    assert bool((res.stop_level >= 2).all()) and bool((res.stop_level <= 9).all())
