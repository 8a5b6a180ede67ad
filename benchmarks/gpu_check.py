"""GPU check: DiffGuard images/s with random-weight networks of the paper's sizes, beside the paper's V100 figures
and the FLOP floor of the card.

Networks (random weights; speed does not depend on the values, except through early stop, which is off here):

* gdm: ADM 256x256 unconditional (guided-diffusion, 553 M parameters) as a diffusers ``UNet2DModel``, ResNet-50
  classifier, DISTS (VGG16). Settings of the paper's speed figure: 60-step grid, no early stop, Clean Grad with
  8 cutouts, input as reference (paper: 0.05 img/s on a V100).
* ldm: latent-diffusion cin256-v2 UNet (401 M, class tokens by cross-attention) with its VQ-f4 autoencoder (55 M) as diffusers
  ``UNet2DConditionModel`` + ``VQModel``, ResNet-50, DISTS; the ``ldm`` preset (25 steps, CFG 10 in the Grad-CAM
  mask; paper: 0.53 img/s on a V100).

The FLOP floor: FLOPs of one image through each network (``FlopCounterMode``) times the evaluations per image that
were counted, divided by the card's peak (vendor spec sheet, dense, no sparsity: TF32 tensor-core peak for
float32 runs, since cuDNN convolutions use TF32 by default; BF16/FP16 peak under autocast). "unknown" for cards
not in the table. ``--tiny`` builds small versions of the same architectures and runs in seconds on a CPU.

    benchmarks/gpu_check.sh                # on a GPU machine: precision off and bf16, channels_last
    python benchmarks/gpu_check.py --tiny  # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from diffguard.backends.latent import DiffusersAutoencoder, LatentBackend
from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import ModuleClassifier
from diffguard.detectors.diffguard import DiffGuard
from diffguard.distances.perceptual import write_dists_weights
from diffguard.distances.vgg import vgg16_feature_shapes
from diffguard.perf.accel import NetworkRunner
from diffguard.perf.counting import NetworkCounter
from diffguard.perf.oom import run_batched
from diffguard.perf.throughput import network_modules
from diffguard.detectors.diffguard_presets import PRESETS, apply_overrides
from diffguard.sysinfo import machine

PAPER_V100_IMG_S = {"gdm": 0.05, "ldm": 0.53}
"""The paper's throughput on one V100 (classifier guidance, 60 steps; latent diffusion, 25 steps)."""

PEAK_TFLOPS = {  # vendor spec sheets, dense (no sparsity); longest matching name wins
    "H100 PCIe": {"tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H200": {"tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "V100": {"tf32": 15.7, "bf16": 15.7, "fp16": 125.0},  # no TF32 / BF16 tensor cores: fp32 peak
    "L4": {"tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
}
GDM_SPEED = ["inversion.steps=60", "inversion.cap=None", "inversion.stop=none", "reference=input"]


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of the card for the precision ("off" -> TF32), or None when the card is not in the table."""
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_TFLOPS[key]["tf32" if precision == "off" else precision] * 1e12
    return None


def adm256_unet(tiny: bool) -> nn.Module:
    """guided-diffusion's 256x256 unconditional model in diffusers terms (tiny: 3 levels, 32 px)."""
    from diffusers import UNet2DModel

    levels = 3 if tiny else 6  # 256 -> 8 px; attention at 32, 16 and 8 px
    down = ["ResnetDownsampleBlock2D"] * (levels - 3) + ["AttnDownBlock2D"] * 3
    return UNet2DModel(sample_size=32 if tiny else 256, in_channels=3, out_channels=6, layers_per_block=2,
                       block_out_channels=(32, 32, 64) if tiny else (256, 256, 512, 512, 1024, 1024),
                       down_block_types=tuple(down), up_block_types=tuple(b.replace("Down", "Up") for b in down[::-1]),
                       attention_head_dim=8 if tiny else 64, norm_num_groups=8 if tiny else 32,
                       resnet_time_scale_shift="scale_shift", downsample_type="resnet", upsample_type="resnet")


class ClassTokenEps(nn.Module):
    """cin256 conditioning: the class label becomes one 512-d context token for the UNet's cross-attention."""

    def __init__(self, unet: nn.Module, classes: int, dim: int, **options: object):
        super().__init__()
        self.unet, self.embed = unet, nn.Embedding(classes, dim)
        self._run = NetworkRunner(unet, **options)

    def forward(self, z: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return self._run(z, t, encoder_hidden_states=self.embed(y)[:, None]).sample.to(z.dtype)


def ldm_cin256(tiny: bool, **options: object) -> LatentBackend:
    """latent-diffusion cin256-v2 (UNet 64x64x3 latents, 1000 classes + null) with the VQ-f4 autoencoder."""
    from diffusers import UNet2DConditionModel, VQModel

    dim = 32 if tiny else 512
    unet = UNet2DConditionModel(
        sample_size=8 if tiny else 64, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(32, 64) if tiny else (192, 384, 576, 960),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D") if tiny else
        ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D") if tiny else
        ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=dim, attention_head_dim=(1, 2) if tiny else (6, 12, 18, 30),
        norm_num_groups=8 if tiny else 32)
    vq = VQModel(in_channels=3, out_channels=3, latent_channels=3, num_vq_embeddings=64 if tiny else 8192,
                 vq_embed_dim=3, block_out_channels=(16, 32, 32) if tiny else (128, 256, 512),
                 down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                 layers_per_block=1 if tiny else 2, norm_num_groups=8 if tiny else 32)
    acp = torch.cumprod(1 - torch.linspace(0.0015 ** 0.5, 0.0155 ** 0.5, 1000, dtype=torch.float64) ** 2, 0)
    return LatentBackend(DiffusersAutoencoder(vq.eval()), ClassTokenEps(unet.eval(), 1001, dim, **options).eval(),
                         acp, null_label=1000)


def resnet50(tiny: bool) -> ModuleClassifier:
    from torchvision.models import resnet18, resnet50 as r50

    net = (resnet18 if tiny else r50)(weights=None, num_classes=1000).eval()
    return ModuleClassifier(net, 1000, "layer4", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                            resolution=(32, 32) if tiny else (224, 224))


def random_dists_file(folder: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(*s, generator=g) * (0.01 if len(s) == 1 else (2 / (s[1] * 9)) ** 0.5)
             for k, s in vgg16_feature_shapes().items()}
    return write_dists_weights(folder / "dists.safetensors", state, torch.rand(1475, generator=g),
                               torch.rand(1475, generator=g))


def build(preset: str, tiny: bool, dists: Path, device: torch.device, **options: object) -> DiffGuard:
    """A DiffGuard of the given preset on random-weight networks of the paper's sizes, on ``device``."""
    clf = resnet50(tiny).to(device)
    kwargs = PRESETS.create(preset, dists_weights=dists)
    if preset == "gdm":
        kwargs = apply_overrides(kwargs, GDM_SPEED + (["guidance.crop_out=28"] if tiny else []))
        unet = adm256_unet(tiny).eval().to(device)
        acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
        backend = PixelBackend(unet, acp, None, 3, **options)
    else:
        backend = ldm_cin256(tiny, **options)
        backend.eps_model.to(device), backend.autoencoder.model.to(device)
    if tiny:
        kwargs["inversion"] = apply_overrides(kwargs, ["inversion.steps=4", "inversion.cap=None"])["inversion"]
    return DiffGuard(clf, backend, **kwargs)


def check(det: DiffGuard, x: Tensor, batch_size: int) -> dict:
    """Warm up, then score x with OOM back-off; counts, FLOPs and timings."""
    det.analyze(x[:1])
    backoffs: list[int] = []
    modules = {**network_modules(det), "dists": det._dist["dists"].net}
    with NetworkCounter(modules) as counter:
        _sync(x)
        t0 = time.perf_counter()
        run_batched(lambda xb: det.analyze(xb).score, x, batch_size, on_backoff=backoffs.append)
        _sync(x)
        seconds = time.perf_counter() - t0
    n = x.shape[0]
    evals = {k: v / n for k, v in sorted(counter.images().items())}
    flops = counter.flops_per_image()
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "batch_backoffs": backoffs,
            "evals_per_image": evals, "flops_per_image": sum(evals[k] * flops[k] for k in evals),
            "params_m": {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in modules.items()}}


def _sync(x: Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small networks, CPU, seconds (smoke test)")
    p.add_argument("--preset", nargs="+", default=["gdm", "ldm"], choices=["gdm", "ldm"])
    p.add_argument("--precision", nargs="+", default=["off", "bf16"], choices=["off", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--n", type=int, default=16, help="images per preset")
    p.add_argument("--batch-size", type=int, default=16, help="first batch size tried (halved on out-of-memory)")
    p.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    threads = torch.get_num_threads()
    if args.tiny:
        torch.set_num_threads(1)  # a smoke test on a possibly shared CPU
    try:
        return run(args, device)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, device: torch.device) -> int:
    """Build, measure and print for every preset and precision."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    torch.manual_seed(0)
    side = 32 if args.tiny else 256
    x = (torch.rand(args.n, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dists = random_dists_file(Path(tmp))
        for preset in args.preset:
            for precision in args.precision:
                det = build(preset, args.tiny, dists, device, autocast=precision,
                            channels_last=args.channels_last, compile=args.compile)
                row = {"preset": preset, "precision": precision, **check(det, x, args.batch_size)}
                peak = peak_flops(name, precision)
                row["floor_images_per_s"] = peak / row["flops_per_image"] if peak else None
                rows.append(row)
                print(f"{preset} {precision}: {row['images_per_s']:.3f} img/s", file=sys.stderr)
                del det
    record = {"device": name, "machine": machine(), "tiny": args.tiny, "channels_last": args.channels_last,
              "compile": args.compile, "gdm_overrides": GDM_SPEED, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nDiffGuard on {name} ({'tiny networks' if args.tiny else 'paper-sized random-weight networks'}), "
          f"n = {args.n}\n")
    print("| preset | precision | img/s | paper V100 img/s | GFLOP / img | FLOP-floor img/s | % of floor |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        floor = r["floor_images_per_s"]
        floor_s = f"{floor:.2f}" if floor else "unknown"
        share = f"{100 * r['images_per_s'] / floor:.0f}%" if floor else "unknown"
        print(f"| {r['preset']} | {r['precision']} | {r['images_per_s']:.3f} | {PAPER_V100_IMG_S[r['preset']]} | "
              f"{r['flops_per_image'] / 1e9:.1f} | {floor_s} | {share} |")
    print(f"\nmachine: {record['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
