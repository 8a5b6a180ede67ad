"""Pixel backend from diffusers folders and the latent backend with a tiny autoencoder, inside DiffGuard."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

from diffguard.backends.latent import DiffusersAutoencoder, LatentBackend, UNetEps
from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import ModuleClassifier
from diffguard.detectors.diffguard import DiffGuard
from diffguard.diffusion.inversion import Inversion
from diffguard.guidance.clean_grad import ClassifierGuidance
from diffguard.guidance.dsg import CFGGuidance
from diffguard.nets.resnet import SmallResNet


def tiny_unet(channels: int, size: int, classes: int | None) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
                       num_class_embeds=classes).eval()


@pytest.mark.parametrize("classes, null", [(None, None), (4, 3)])
def test_pixel_backend_from_diffusers_folder(tmp_path, classes, null):
    tiny_unet(1, 16, classes).save_pretrained(tmp_path / "unet")
    DDPMScheduler(num_train_timesteps=100).save_pretrained(tmp_path / "scheduler")
    backend = PixelBackend.from_diffusers(str(tmp_path), null_label=null)
    z = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        e = backend.eps(z, torch.tensor([0, 99]), None)
    assert e.shape == z.shape and torch.isfinite(e).all()
    assert backend.alphas_cumprod.shape == (100,)


def test_pixel_backend_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="diffusers folder"):
        PixelBackend.from_diffusers(str(tmp_path))
    tiny_unet(1, 16, 4).save_pretrained(tmp_path / "unet")
    DDPMScheduler(num_train_timesteps=100).save_pretrained(tmp_path / "scheduler")
    with pytest.raises(ValueError, match="null_label"):
        PixelBackend.from_diffusers(str(tmp_path), null_label=7)
    uncond = PixelBackend(tiny_unet(1, 16, None), torch.linspace(0.99, 0.01, 100), None, 1)
    with pytest.raises(ValueError, match="unconditional"):
        uncond.eps(torch.zeros(1, 1, 16, 16), torch.tensor([1]), torch.tensor([0]))


@pytest.fixture(scope="module")
def latent_setup():
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=2,
                        norm_num_groups=4, layers_per_block=1).eval()
    acp = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    backend = LatentBackend(DiffusersAutoencoder(vae), UNetEps(tiny_unet(2, 8, 7), 2), acp, null_label=6)
    clf = ModuleClassifier(SmallResNet(6, width=4).eval(), 6, "layer4", resolution=(16, 16))
    return backend, clf, torch.rand(2, 1, 16, 16) * 2 - 1


def test_latent_backend_encode_decode_shapes(latent_setup):
    backend, _, x = latent_setup
    with torch.no_grad():
        z = backend.encode(x)
        assert z.shape == (2, 2, 8, 8)
        out = backend.decode(z)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("guidance", [ClassifierGuidance(scale=2.0, cutouts=2), CFGGuidance(scale=3.0, cam_cut=0.3)])
def test_diffguard_on_latent_backend(latent_setup, guidance):
    backend, clf, x = latent_setup
    det = DiffGuard(clf, backend, guidance, Inversion(steps=5, spacing="uniform", variant="shifted"),
                    reference="unguided", distances=("l2", "ssim"))
    res = det.analyze(x)
    assert res.score.shape == (2,) and torch.isfinite(res.score).all()
    assert res.synthesis.shape == x.shape and res.unguided.shape == x.shape
    assert float(res.score.max()) > 0  # guidance changed the synthesis (a random CAM may mask a sample out)
