"""Seconds per diffusion training step in float32 and under bf16 autocast, for a few UNet widths (prints a table).

    python benchmarks/train_step_precision.py --threads 2

Random data of fmnist6's shape (batch 128, 1x28x28, 7 class embeddings); the minimum over ``--repeats`` steps after
one warm-up step. It tells whether ``diffguard train diffusion --precision bf16`` pays on this machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from diffguard.report.tables import markdown_table
from diffguard.sysinfo import machine
from diffguard.train.train_diffusion import DiffusionTrainConfig, build_unet


def step_seconds(channels: tuple[int, ...], layers: int, precision: str, batch: int, repeats: int) -> float:
    cfg = DiffusionTrainConfig(channels=channels, layers_per_block=layers, precision=precision)
    unet = build_unet(cfg)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(batch, 1, 28, 28, generator=gen), torch.randint(0, 1000, (batch,), generator=gen)
    y = torch.randint(0, 7, (batch,), generator=gen)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = unet(x, t, class_labels=y).sample
        loss = (out.float() - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--widths", default="32,64,64;48,96,96;64,128,128", help="';'-separated channel tuples")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.widths.split(";"):
        channels = tuple(int(c) for c in spec.split(","))
        params = sum(q.numel() for q in build_unet(DiffusionTrainConfig(channels=channels)).parameters())
        row = {"channels": spec, "parameters (M)": round(params / 1e6, 2)}
        for precision in ("fp32", "bf16"):
            row[f"{precision} s / step"] = round(step_seconds(channels, 1, precision, args.batch, args.repeats), 2)
        rows.append(row)
    print(markdown_table(rows))
    print(f"\nbatch {args.batch}, {args.threads} torch threads; {machine()}")


if __name__ == "__main__":
    main()
