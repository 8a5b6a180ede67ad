"""Diffusers-folder loaders: a tiny DiT (transformer/ + vae/ + scheduler/, learned sigma, null class = K) and a
tiny latent UNet2DModel on a VQModel, each saved with ``save_pretrained`` as diffusers does, loaded through our
loaders and used to score two images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffguard.backends.dit import load_dit, load_latent_diffusers
from diffguard.backends.loaders import CheckpointError


def _tiny_classifier(side: int):
    import torchvision

    from diffguard.classify.torchvision import torchvision_classifier

    torch.manual_seed(0)
    return torchvision_classifier("resnet18", torchvision.models.resnet18(num_classes=10).state_dict(),
                                  num_classes=10, resolution=side)


def _save_scheduler(root: Path) -> None:
    from diffusers import DDPMScheduler

    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(root / "scheduler")


def _tiny_dit_folder(root: Path, classes: int = 10) -> Path:
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    torch.manual_seed(0)
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
                          sample_size=8, patch_size=2, num_embeds_ada_norm=classes,
                          ).save_pretrained(root / "transformer")
    AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, sample_size=16).save_pretrained(
        root / "vae")
    _save_scheduler(root)
    return root


def test_tiny_dit_folder_end_to_end(tmp_path: Path) -> None:
    from diffguard.detectors.diffguard_presets import diffguard_detector

    backend = load_dit(_tiny_dit_folder(tmp_path / "dit"))
    assert backend.null_label == 10 and backend.scale_factor == pytest.approx(0.18215)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = backend.encode(x)
        assert z.shape == (2, 4, 8, 8)
        eps = backend.eps(z, torch.tensor([10, 500]), torch.tensor([3, 10]))  # a label and the null class
    assert eps.shape == z.shape  # learned sigma split off: 8 outputs -> 4
    det = diffguard_detector(_tiny_classifier(16), backend, "ldm", steps=3, cam_cut=None, scale=4.0, distances=("l2",))
    res = det.analyze(x)
    assert res.score.shape == (2,) and bool(torch.isfinite(res.score).all()) and res.synthesis.shape == x.shape


def test_dit_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="transformer/"):
        load_dit(tmp_path)
    root = _tiny_dit_folder(tmp_path / "dit")
    from diffusers import AutoencoderKL

    AutoencoderKL(latent_channels=3).save_pretrained(root / "vae")
    with pytest.raises(CheckpointError, match="latent channels"):
        load_dit(root)


def test_tiny_latent_unet_on_a_vq_model(tmp_path: Path) -> None:
    from diffusers import UNet2DModel, VQModel

    from diffguard.detectors.diffguard_presets import diffguard_detector

    torch.manual_seed(0)
    root = tmp_path / "ldm"
    UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 32), layers_per_block=1,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                num_class_embeds=11).save_pretrained(root / "unet")
    VQModel(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=3, num_vq_embeddings=16).save_pretrained(
        root / "vqvae")
    _save_scheduler(root)
    with pytest.raises(ValueError, match="null_label"):
        load_latent_diffusers(root)
    backend = load_latent_diffusers(root, null_label=10)
    assert backend.scale_factor == 1.0
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    det = diffguard_detector(_tiny_classifier(16), backend, "ldm", steps=3, cam_cut=None, distances=("l2",))
    res = det.analyze(x)
    assert res.score.shape == (2,) and bool(torch.isfinite(res.score).all())


def test_dit_folder_with_the_older_transformer2d_config(tmp_path: Path) -> None:
    """The DiT-XL-2-256 folder names its transformer ``Transformer2DModel`` (older diffusers); it loads the same."""
    import json

    root = _tiny_dit_folder(tmp_path / "dit")
    cfg_file = root / "transformer" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(_class_name="Transformer2DModel", norm_type="ada_norm_zero")
    cfg_file.write_text(json.dumps(cfg))
    backend = load_dit(root)
    z = torch.zeros(1, 4, 8, 8)
    with torch.no_grad():
        assert backend.eps(z, torch.tensor([3]), torch.tensor([10])).shape == z.shape


def test_dit_folders_are_recognised_from_their_files(tmp_path: Path) -> None:
    """A DiT pipeline folder given as a plain path, and its bare transformer/ folder (VAE and scheduler found
    beside it), load as the same class-conditional latent backend."""
    from diffguard.specs.model_specs import build_backend

    root = _tiny_dit_folder(tmp_path / "dit")
    for spec in (str(root), {"type": "diffusers", "folder": str(root / "transformer")}):
        backend = build_backend(spec)
        assert backend.null_label == 10 and backend.scale_factor == pytest.approx(0.18215)
    import shutil

    shutil.copytree(root / "transformer", tmp_path / "alone")
    with pytest.raises(CheckpointError, match="DiT without a VAE"):
        build_backend({"type": "diffusers", "folder": str(tmp_path / "alone"), "scheduler": str(root / "scheduler")})
