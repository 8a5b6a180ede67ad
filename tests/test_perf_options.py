"""GPU execution options (autocast, channels_last, compile) and the out-of-memory back-off, checked on the CPU."""

from __future__ import annotations

import pytest
import torch

from diffguard.backends.latent import UNetEps
from diffguard.backends.pixel_unet import PixelBackend
from diffguard.perf.accel import NetworkRunner
from diffguard.perf.oom import run_batched
from diffguard.train.train_diffusion import DiffusionTrainConfig, build_scheduler, build_unet


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet(DiffusionTrainConfig(channels=(8, 16, 16), attention_lowest=False)).eval()


def test_options_off_and_channels_last_keep_results(unet):
    acp = build_scheduler(DiffusionTrainConfig()).alphas_cumprod
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([10, 500]), torch.tensor([0, 6])
    plain = PixelBackend(unet, acp, 6, 1)
    with torch.no_grad():
        ref = unet(x, t, class_labels=y).sample
        assert torch.equal(plain.eps(x, t, y), ref)
        cl = PixelBackend(unet, acp, 6, 1, channels_last=True).eps(x, t, y)
        assert torch.allclose(cl, ref, atol=1e-5)
        bf = PixelBackend(unet, acp, 6, 1, autocast="bf16").eps(x, t, y)
    unet.to(memory_format=torch.contiguous_format)
    assert bf.dtype == torch.float32 and torch.allclose(bf, ref, atol=0.1) and not torch.equal(bf, ref)
    with torch.no_grad():
        assert torch.allclose(UNetEps(unet, 1, autocast="bf16")(x, t, y), bf, atol=2e-2)
    with pytest.raises(ValueError, match="autocast"):
        PixelBackend(unet, acp, 6, 1, autocast="fp8")


def test_compile_option_wraps_the_module(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda m: seen.append(m) or (lambda *a, **k: "compiled"))
    net = torch.nn.Identity()
    assert NetworkRunner(net, compile=True)(torch.ones(1, 1, 2, 2)) == "compiled" and seen == [net]


def test_run_batched_halves_the_batch_on_out_of_memory():
    sizes = []

    def fn(a, b):
        sizes.append(a.shape[0])
        if a.shape[0] > 3:
            raise torch.OutOfMemoryError("fake: too big")
        return {"sum": a + b, "parts": (a, b * 2)}

    backoffs = []
    a, b = torch.arange(10.0), torch.ones(10)
    out = run_batched(fn, (a, b), batch_size=8, on_backoff=backoffs.append)
    assert torch.equal(out["sum"], a + b) and torch.equal(out["parts"][1], b * 2)
    assert backoffs == [4, 2] and sizes == [8, 4, 2, 2, 2, 2, 2]  # the smaller size is kept once found
    assert torch.equal(run_batched(lambda v: v * 3, a, 4), a * 3)


def test_run_batched_gives_up_at_the_minimum():
    def fn(a):
        raise torch.OutOfMemoryError("fake")

    with pytest.raises(torch.OutOfMemoryError, match="even at batch size 2"):
        run_batched(fn, torch.zeros(8), batch_size=8, min_batch_size=2)
    with pytest.raises(ValueError, match="same length"):
        run_batched(fn, (torch.zeros(3), torch.zeros(4)), 2)
