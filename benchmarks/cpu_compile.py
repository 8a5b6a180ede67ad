"""Can the per-call cost of the fmnist6 networks be cut on this CPU? Eager vs ``torch.compile`` (inductor).

Production DiffGuard already runs at its network-evaluation floor (``benchmarks/throughput.py``), so the only way to
go faster at the same number of calls is a cheaper call. This script times the two calls that make up the floor of
``fmnist6-clean-grad``, eager and compiled, at the batch sizes production uses:

* the diffusion UNet forward at batch ``--batch-size`` (no grad);
* the classifier forward + backward w.r.t. its input on ``--batch-size`` x 4 crops (the Clean-Grad cutouts).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 OMP_WAIT_POLICY=PASSIVE \\
        python benchmarks/cpu_compile.py --threads 2

Prints one Markdown table (ms per call, speed-up, max abs output difference) and writes ``cpu_compile.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def time_call(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def unet_call(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return unet(x, t, class_labels=y).sample


def grad_call(clf: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().requires_grad_(True)
    loss = torch.log_softmax(clf(leaf), 1).gather(1, y[:, None]).sum()
    (g,) = torch.autograd.grad(loss, leaf)
    return g


def compare(name: str, eager: Callable[[], torch.Tensor], compiled: Callable[[], torch.Tensor],
            repeats: int) -> dict:
    t0 = time.perf_counter()
    compiled()
    compile_s = time.perf_counter() - t0
    te, tc = time_call(eager, repeats), time_call(compiled, repeats)
    diff = float((eager() - compiled()).abs().max())
    return {"call": name, "eager_ms": 1e3 * te, "compiled_ms": 1e3 * tc, "speedup": te / tc,
            "compile_s": compile_s, "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> int:
    from diffguard.backends.pixel_unet import PixelBackend
    from diffguard.model_files import load_classifier
    from diffguard.sysinfo import command_line, machine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path, default=Path("runs/cpu-compile"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    unet = PixelBackend.from_folder().unet.eval()
    clf = load_classifier().eval()
    n = args.batch_size
    x = torch.randn(n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size, generator=gen)
    t = torch.full((n,), 500)
    y = torch.zeros(n, dtype=torch.long) if unet.config.num_class_embeds else None
    crops = torch.randn(4 * n, 1, 28, 28, generator=gen)
    yc = torch.randint(0, clf.config["num_classes"], (4 * n,), generator=gen)
    cu, cc = torch.compile(unet), torch.compile(clf)
    rows = [compare(f"UNet forward, batch {n}", lambda: unet_call(unet, x, t, y), lambda: unet_call(cu, x, t, y),
                    args.repeats),
            compare(f"classifier fwd+bwd, {4 * n} crops", lambda: grad_call(clf, crops, yc),
                    lambda: grad_call(cc, crops, yc), args.repeats)]
    record = {"command": command_line(), "machine": machine(), "threads": args.threads, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_compile.json").write_text(json.dumps(record, indent=2) + "\n")
    print("| call | eager ms | compiled ms | speed-up | compile s | max abs diff |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['call']} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | {r['speedup']:.2f}x | "
              f"{r['compile_s']:.1f} | {r['max_abs_diff']:.1e} |")
    print(f"\nmachine: {record['machine']}, {args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
