"""Distances: every registered one for shape, finiteness, zero on identical inputs, dtype/device; hand-worked values."""

from __future__ import annotations

import math
from pathlib import Path

import piq
import pytest
import torch
from torch import Tensor

from diffguard.distances import (DISTANCES, create_distance, list_distances, write_dists_weights,
                                 write_lpips_weights)
from diffguard.distances.vgg import VGG16_CONVS, VGG16Trunk

torch.set_num_threads(1)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


class TinyLinear:
    """logits(x) = flatten(x) @ W[:, :D].T + b, following the input's dtype (K = W.shape[0])."""

    def __init__(self, weight: Tensor, bias: Tensor):
        self.weight, self.bias = weight, bias

    def logits(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return flat @ self.weight[:, : flat.shape[1]].to(x).T + self.bias.to(x)


@pytest.fixture(scope="module")
def vgg_state() -> dict[str, Tensor]:
    """Random He-initialised VGG16 ``features.*`` tensors in torchvision layout."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for i, c_in, c_out in VGG16_CONVS:
        state[f"features.{i}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g) * math.sqrt(2 / (9 * c_in))
        state[f"features.{i}.bias"] = torch.randn(c_out, generator=g) * 0.01
    return state


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory, vgg_state: dict[str, Tensor]) -> dict[str, Path]:
    """A random DISTS file (safetensors) and a random LPIPS file (torch), both with non-negative metric weights."""
    root = tmp_path_factory.mktemp("perceptual")
    g = torch.Generator().manual_seed(1)
    dists = write_dists_weights(root / "dists.safetensors", vgg_state, torch.rand(1, 1475, 1, 1, generator=g),
                                torch.rand(1475, generator=g))
    lpips = write_lpips_weights(root / "lpips.pt", vgg_state, [torch.rand(1, c, 1, 1, generator=g)
                                                               for c in LPIPS_CHANNELS])
    return {"dists": dists, "lpips": lpips}


@pytest.fixture(scope="module")
def make(weight_files: dict[str, Path]):
    """name -> a distance built with what it needs (weights files, a tiny classifier), one instance per name."""
    g = torch.Generator().manual_seed(2)
    extra = {"dists": {"weights": weight_files["dists"]}, "lpips": {"weights": weight_files["lpips"]},
             "logits_l1": {"classifier": TinyLinear(torch.randn(10, 3 * 64 * 64, generator=g), torch.randn(10))}}
    cache: dict = {}

    def factory(name: str):
        if name not in cache:
            cache[name] = create_distance(name, **extra.get(name, {}))
        return cache[name]

    return factory


def pair(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """x in [-1, 1] and a noisy version of it (also slightly outside [-1, 1], as syntheses can be)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    x_hat = x + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(dtype), x_hat.to(dtype)


NAMES = list_distances()
SHAPES = [(2, 1, 28, 28), (2, 3, 64, 64)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_registry_has_every_kind() -> None:
    assert set(NAMES) >= {"l1", "l2", "psnr", "ssim", "gmsd", "dists", "lpips", "logits_l1"}
    assert list_distances("*l1") == ["l1", "logits_l1"]
    for name in NAMES:
        assert DISTANCES.get(name).name == name
        assert DISTANCES.get(name).__doc__


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=["gray28", "rgb64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("device", DEVICES)
def test_contract(make, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: str) -> None:
    d = make(name)
    x, x_hat = (t.to(device) for t in pair(shape, dtype))
    same, diff = d(x, x.clone()), d(x, x_hat)
    for out in (same, diff):
        assert out.shape == (shape[0],)
        assert out.dtype == dtype and out.device == x.device
        assert torch.isfinite(out).all()
    assert same.abs().max() <= 1e-6
    assert (diff > 1e-4).all()
    assert torch.equal(d(x, x_hat), diff)  # deterministic


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise(make, name: str) -> None:
    d = make(name)
    x, x_hat = pair((2, 3, 32, 32))
    with pytest.raises(ValueError, match="differ in shape"):
        d(x, x_hat[:1])
    with pytest.raises(ValueError, match="B, C, H, W"):
        d(x[0], x_hat[0])
    for bad in (float("nan"), float("inf")):
        broken = x_hat.clone()
        broken[1, 0, 3, 3] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            d(x, broken)


def test_l1_l2_psnr_hand_worked() -> None:
    x = -torch.ones(1, 3, 2, 2)  # all 0 in [0, 1]
    x_hat = x.clone()
    x_hat[0, 0, 0, 0] = 3.0  # clamped to 1 in [0, 1]
    x_hat[0, 2, 1, 1] = 0.0  # 0.5 in [0, 1]
    assert create_distance("l1")(x, x_hat).item() == pytest.approx(1.5 / 12)
    assert create_distance("l2")(x, x_hat).item() == pytest.approx(math.sqrt(1.25))
    psnr = 10 * math.log10(12 / 1.25)  # mse = 1.25 / 12, peak 1
    assert create_distance("psnr")(x, x_hat).item() == pytest.approx(100 - psnr, abs=1e-4)
    assert create_distance("psnr", cap=20)(x, x_hat).item() == pytest.approx(20 - psnr, abs=1e-4)
    assert create_distance("psnr", cap=5)(x, x_hat).item() == 0.0
    assert create_distance("psnr").psnr(x, x_hat).item() == pytest.approx(psnr, abs=1e-4)
    assert create_distance("psnr")(x, -x).item() == pytest.approx(100.0)  # mse = 1: PSNR 0 dB
    with pytest.raises(ValueError, match="cap"):
        create_distance("psnr", cap=0)


@pytest.mark.parametrize("shape", SHAPES, ids=["gray28", "rgb64"])
def test_ssim_gmsd_match_piq(shape: tuple[int, ...]) -> None:
    x, x_hat = pair(shape)
    u, u_hat = ((x + 1) / 2).clamp(0, 1), ((x_hat + 1) / 2).clamp(0, 1)
    ssim = piq.ssim(u, u_hat, data_range=1.0, reduction="none")
    torch.testing.assert_close(create_distance("ssim")(x, x_hat), 1 - ssim)
    torch.testing.assert_close(create_distance("gmsd")(x, x_hat), piq.gmsd(u, u_hat, data_range=1.0, reduction="none"))


def test_ssim_small_images_need_a_smaller_window() -> None:
    x, x_hat = pair((2, 1, 8, 8))
    with pytest.raises(ValueError, match="kernel_size"):
        create_distance("ssim")(x, x_hat)
    assert (create_distance("ssim", kernel_size=7)(x, x_hat) > 0).all()
    with pytest.raises(ValueError, match="odd"):
        create_distance("ssim", kernel_size=4)


def test_structural_and_perceptual_reject_other_channel_counts(make) -> None:
    x, x_hat = pair((2, 2, 32, 32))
    for name in ("ssim", "gmsd", "dists", "lpips"):
        with pytest.raises(ValueError, match="1 or 3 channels"):
            make(name)(x, x_hat)
    assert (make("l2")(x, x_hat) > 0).all()


def test_logits_l1_hand_worked() -> None:
    weight = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]])
    d = create_distance("logits_l1", classifier=TinyLinear(weight, torch.tensor([5.0, -2.0, 0.5])))
    x = torch.zeros(1, 1, 2, 2)
    x_hat = torch.tensor([[[[0.5, -0.5], [0.25, 1.5]]]])  # 1.5 is clamped to 1
    # logit differences: -0.5, 0.5 - 0.25 = 0.25, -0.5 + 0.5 - 0.25 - 1 = -1.25
    assert d(x, x_hat).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="classifier"):
        create_distance("logits_l1")


def test_dists_formula_on_the_image_stage(tmp_path: Path, vgg_state: dict[str, Tensor]) -> None:
    """With weight only on stage 0 (the [0, 1] image), DISTS is the hand-computed texture / structure terms."""
    alpha, beta = torch.zeros(1475), torch.zeros(1475)
    alpha[0], beta[1] = 3.0, 1.0  # texture of channel R, structure of channel G; normalised to 3/4 and 1/4
    d = create_distance("dists", weights=write_dists_weights(tmp_path / "w.pt", vgg_state, alpha, beta))
    x, x_hat = pair((2, 3, 16, 16), torch.float64)
    u, v = ((x + 1) / 2).clamp(0, 1), ((x_hat + 1) / 2).clamp(0, 1)
    mu, mv = u[:, 0].mean((1, 2)), v[:, 0].mean((1, 2))
    texture = (2 * mu * mv + 1e-6) / (mu**2 + mv**2 + 1e-6)
    a, b = u[:, 1] - u[:, 1].mean((1, 2), keepdim=True), v[:, 1] - v[:, 1].mean((1, 2), keepdim=True)
    structure = (2 * (a * b).mean((1, 2)) + 1e-6) / (a.square().mean((1, 2)) + b.square().mean((1, 2)) + 1e-6)
    expected = 0.75 * (1 - texture) + 0.25 * (1 - structure)
    torch.testing.assert_close(d(x, x_hat), expected)
    torch.testing.assert_close(d.similarity(x, x_hat), 1 - expected)
    assert torch.equal(d.similarity(x, x), torch.ones(2, dtype=torch.float64))


def test_max_trunk_matches_torchvision_layout(vgg_state: dict[str, Tensor]) -> None:
    from torchvision.models.vgg import cfgs, make_layers

    reference = make_layers(cfgs["D"])
    reference.load_state_dict({k.removeprefix("features."): v for k, v in vgg_state.items()})
    trunk = VGG16Trunk("max")
    trunk.load_state_dict(vgg_state)
    x = torch.randn(1, 3, 32, 32)
    ours = trunk(x)
    with torch.no_grad():
        for stage, end in zip(ours, (4, 9, 16, 23, 30)):  # after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
            torch.testing.assert_close(stage, reference[:end](x))


def test_lpips_accepts_short_key_names(tmp_path: Path, weight_files: dict[str, Path], make) -> None:
    tensors = torch.load(weight_files["lpips"], weights_only=True)
    renamed = {k.replace(".model.1", ""): v for k, v in tensors.items()}
    torch.save(renamed, tmp_path / "short.pt")
    x, x_hat = pair((2, 3, 32, 32))
    torch.testing.assert_close(create_distance("lpips", weights=tmp_path / "short.pt")(x, x_hat),
                               make("lpips")(x, x_hat))
    with pytest.raises(ValueError, match="16x16"):
        make("lpips")(*pair((2, 1, 8, 8)))


@pytest.mark.parametrize("name", ["dists", "lpips"])
def test_weights_errors(tmp_path: Path, weight_files: dict[str, Path], name: str) -> None:
    with pytest.raises(ValueError, match="needs a local weights file.*write_"):
        create_distance(name)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        create_distance(name, weights=tmp_path / "nowhere.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="junk.safetensors.*could not be read"):
        create_distance(name, weights=tmp_path / "junk.safetensors")
    tensors = torch.load(weight_files["lpips"], weights_only=True)
    if name == "dists":
        tensors.update(alpha=torch.rand(1, 1475, 1, 1), beta=torch.rand(1, 1475, 1, 1))
    del tensors["features.28.bias"]
    torch.save(tensors, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing.pt.*missing keys \['features.28.bias'\]"):
        create_distance(name, weights=tmp_path / "missing.pt")
    tensors["features.28.bias"] = torch.zeros(3)
    torch.save(tensors, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"wrong shapes: features.28.bias \(3,\) \(expected \(512,\)\)"):
        create_distance(name, weights=tmp_path / "shape.pt")


def test_writers_check_their_inputs(tmp_path: Path, vgg_state: dict[str, Tensor]) -> None:
    with pytest.raises(ValueError, match="1475 elements"):
        write_dists_weights(tmp_path / "w.pt", vgg_state, torch.rand(10), torch.rand(1475))
    with pytest.raises(ValueError, match="5 linear weights"):
        write_lpips_weights(tmp_path / "w.pt", vgg_state, [torch.rand(64)])
    with pytest.raises(ValueError, match="missing keys"):
        write_lpips_weights(tmp_path / "w.pt", {}, [torch.rand(c) for c in LPIPS_CHANNELS])
