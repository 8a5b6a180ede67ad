"""The DDIM-repository / DiffNB loader: a small re-implementation of the original ``Model`` (same module names, so
the same state-dict keys, and the forward arithmetic as read in luping-liu/DiffOOD ``network/ddim/ddim.py``) is
saved as DiffNB saves it, loaded through the converter, and must give the same eps; plus end-to-end scoring and
errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffguard.backends.ddim_cifar import (DdimConfig, convert_ddim_state_dict, infer_ddim_config,
                                           linear_alphas_cumprod, load_ddim_cifar, load_ddim_unet, pick_ddim_state)
from diffguard.backends.loaders import CheckpointError


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Tiny convolutions run fastest single-threaded on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2, self.dropout, self.conv2 = _gn(cout), nn.Dropout(0.1), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _Attn(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _gn(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q, k, v = (m(h).reshape(b, c, hh * ww) for m in (self.q, self.k, self.v))
        w = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=2)  # (b, query, key)
        return x + self.proj_out((v @ w.transpose(1, 2)).reshape(b, c, hh, ww))


class _Resample(nn.Module):
    def __init__(self, c: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(c, c, 3, stride=2 if down else 1, padding=0 if down else 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.down else F.interpolate(x, scale_factor=2.0, mode="nearest"))


class OriginalModel(nn.Module):
    """The DDIM-repository ``Model`` with DiffNB's ``label_emb`` (num_classes + 1 rows) added to the time embedding."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], nrb: int, attn_res: tuple[int, ...], size: int,
                 num_classes: int, in_ch: int = 3, out_ch: int = 3) -> None:
        super().__init__()
        self.ch, self.n, self.nrb, self.num_classes = ch, len(ch_mult), nrb, num_classes
        temb = 4 * ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb), nn.Linear(temb, temb)])
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        res, mults, cin = size, (1,) + ch_mult, ch
        self.down = nn.ModuleList()
        for lvl in range(self.n):
            d = nn.Module()
            d.block, d.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nrb):
                d.block.append(_Res(cin, ch * ch_mult[lvl], temb))
                cin = ch * ch_mult[lvl]
                if res in attn_res:
                    d.attn.append(_Attn(cin))
            if lvl != self.n - 1:
                d.downsample, res = _Resample(cin, True), res // 2
            self.down.append(d)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = _Res(cin, cin, temb), _Attn(cin), _Res(cin, cin, temb)
        self.up = nn.ModuleList()
        for lvl in reversed(range(self.n)):
            u = nn.Module()
            u.block, u.attn = nn.ModuleList(), nn.ModuleList()
            for r in range(nrb + 1):
                skip = ch * (mults[lvl] if r == nrb else ch_mult[lvl])
                u.block.append(_Res(cin + skip, ch * ch_mult[lvl], temb))
                cin = ch * ch_mult[lvl]
                if res in attn_res:
                    u.attn.append(_Attn(cin))
            if lvl != 0:
                u.upsample, res = _Resample(cin, False), res * 2
            self.up.insert(0, u)
        self.norm_out, self.conv_out = _gn(cin), nn.Conv2d(cin, out_ch, 3, padding=1)
        if num_classes > 0:
            self.label_emb = nn.Embedding(num_classes + 1, temb)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        half = self.ch // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        arg = t.float()[:, None] * freqs[None]
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](torch.cat([arg.sin(), arg.cos()], dim=1))))
        if self.num_classes > 0:
            temb = temb + self.label_emb(y)
        hs = [self.conv_in(x)]
        for lvl in range(self.n):
            for r in range(self.nrb):
                h = self.down[lvl].block[r](hs[-1], temb)
                hs.append(self.down[lvl].attn[r](h) if len(self.down[lvl].attn) else h)
            if lvl != self.n - 1:
                hs.append(self.down[lvl].downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for lvl in reversed(range(self.n)):
            for r in range(self.nrb + 1):
                h = self.up[lvl].block[r](torch.cat([h, hs.pop()], dim=1), temb)
                if len(self.up[lvl].attn):
                    h = self.up[lvl].attn[r](h)
            if lvl != 0:
                h = self.up[lvl].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _tiny(num_classes: int = 10, seed: int = 0, size: int = 16) -> OriginalModel:
    torch.manual_seed(seed)
    model = OriginalModel(32, (1, 2, 2), 1, (size // 2,), size, num_classes).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped key cannot hide
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.mark.parametrize("num_classes", [10, 0])
def test_converted_unet_matches_the_original_forward(tmp_path: Path, num_classes: int) -> None:
    model = _tiny(num_classes)
    torch.save(model.state_dict(), tmp_path / "ddim_cifar10_cond.ckpt")  # DiffNB: th.save(model.state_dict())
    unet = load_ddim_unet(tmp_path / "ddim_cifar10_cond.ckpt", {"Model": {
        "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [8], "image_size": 16,
        "out_ch": 3, "num_classes": num_classes, "resamp_with_conv": True, "type": "simple"}})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    y = torch.tensor([0, 3, 9, 10]) if num_classes else None  # 10 = DiffNB's null label
    with torch.no_grad():
        ref = model(x, t, y)
        out = unet(x, t, class_labels=y).sample
    assert ref.abs().mean() > 0.1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_layout_is_read_from_the_weights() -> None:
    state = _tiny().state_dict()
    cfg = infer_ddim_config(state, image_size=16)
    assert cfg == DdimConfig(3, 3, 32, (1, 2, 2), 1, (1,), 10, 16)
    unet_config, converted = convert_ddim_state_dict(state, cfg)
    assert unet_config["up_block_types"] == ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert torch.equal(converted["up_blocks.0.resnets.1.conv1.weight"], state["up.2.block.1.conv1.weight"])
    assert converted["down_blocks.1.attentions.0.to_q.weight"].shape == (64, 64)


def test_backend_defaults_and_saved_containers(tmp_path: Path) -> None:
    model = _tiny()
    sd = model.state_dict()
    ema = {k: v + 1 for k, v in sd.items()}
    torch.save([{f"module.{k}": v for k, v in sd.items()}, {"state": {}, "param_groups": []}, 3, 10, ema],
               tmp_path / "ckpt.pth")  # the DDIM repository's [model, optimizer, epoch, step, ema]
    picked = pick_ddim_state(torch.load(tmp_path / "ckpt.pth", weights_only=True))
    assert torch.equal(picked["conv_in.weight"], ema["conv_in.weight"])
    torch.save([{f"module.{k}": v for k, v in sd.items()}, {}, {}, 1, 2, 0.0], tmp_path / "train.ckpt")
    assert set(pick_ddim_state(torch.load(tmp_path / "train.ckpt", weights_only=True))) == set(sd)
    torch.save(sd, tmp_path / "m.ckpt")
    backend = load_ddim_cifar(tmp_path / "m.ckpt")
    assert backend.null_label == 10 and backend.channels == 3
    acp = backend.alphas_cumprod
    assert acp.dtype == torch.float64 and acp.shape == (1000,) and acp[0].item() == pytest.approx(1 - 1e-4)
    assert torch.equal(acp, linear_alphas_cumprod())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(backend.eps(x, torch.tensor([5, 5]), None),
                                   model(x, torch.tensor([5, 5]), torch.tensor([10, 10])), rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="outside"):
        load_ddim_cifar(tmp_path / "m.ckpt", null_label=11)


def test_wrong_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="ADM"):
        load_ddim_unet({"input_blocks.0.0.weight": torch.zeros(1), "out.2.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="no DDIM Model state dict"):
        load_ddim_unet([{"state": {}}, 3])  # type: ignore[arg-type]
    sd = _tiny().state_dict()
    with pytest.raises(CheckpointError, match="unexpected key 'mid.attn_2.q.weight'"):
        load_ddim_unet({**sd, "mid.attn_2.q.weight": torch.zeros(64, 64, 1, 1)})
    with pytest.raises(CheckpointError, match="missing 1 key"):
        load_ddim_unet({k: v for k, v in sd.items() if k != "up.0.block.1.norm2.bias"})
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_ddim_unet(sd, DdimConfig(3, 3, 32, (1, 2, 2), 1, (1,), 9, 16))
    with pytest.raises(CheckpointError, match="ch_mult"):
        load_ddim_unet(sd, DdimConfig(3, 3, 32, (2, 2, 2), 1, (1,), 10, 16))
    with pytest.raises(CheckpointError, match="resamp_with_conv"):
        DdimConfig.from_mapping({"ch": 32, "ch_mult": [1], "num_res_blocks": 1, "attn_resolutions": [],
                                 "out_ch": 3, "resamp_with_conv": False})
    with pytest.raises(CheckpointError, match="not found"):
        load_ddim_cifar(tmp_path / "missing.ckpt")


def test_cifar10_builder_scores_with_the_original_checkpoint(tmp_path: Path) -> None:
    from diffguard.specs.model_specs import build_backend
    from diffguard.nets.cifar_resnet import CifarResNet18
    from diffguard.paper import build_paper_detector

    torch.save(_tiny(size=32).state_dict(), tmp_path / "ddim_cifar10_cond.ckpt")
    torch.save(CifarResNet18(10).state_dict(), tmp_path / "best.ckpt")
    det = build_paper_detector("cifar10", diffnb_ckpt=tmp_path / "ddim_cifar10_cond.ckpt",
                               openood_ckpt=tmp_path / "best.ckpt", steps=3)
    assert det.backend.null_label == 10 and det.distances == ("logits_l1",)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    score = det.predict(x)
    assert score.shape == (2,) and bool(torch.isfinite(score).all()) and bool((score > 0).all())
    spec = build_backend({"type": "ddim_cifar", "checkpoint": str(tmp_path / "ddim_cifar10_cond.ckpt")})
    assert spec.null_label == 10
