"""Kinds of images that are in no set of the repository: does a method flag them as OOD?

Issue 13 (far-OOD that does not fool DiffGuard): random noise PNGs were scored as in-distribution. This script
makes seeded images of kinds that no benchmark set, validation set or test set uses -- blank images (black, grey,
white), checkerboards, salt-and-pepper noise, random rectangles, linear ramps, uniform noise at full range and at
low contrast -- and reports, for each method, the share of each kind flagged at the 95 %-TPR threshold of
``--val`` seeded ID-val images (the way ``diffguard score --config`` calibrates). Nothing here chooses a setting;
it checks the choices made on validation data.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 OMP_WAIT_POLICY=PASSIVE \\
        python benchmarks/unseen_kinds.py --method msp mds diffguard-cfg --n 16 --val 200 --threads 2

``--method`` takes methods of the config and its fusion keys (``diffguard-cfg+mds``, ``dg+mds:weighted``).
``--set NAME.KEY=VALUE`` changes a method of the config (e.g. ``diffguard-cfg.score_distance=l1``,
``diffguard-cfg.calibration=class``). Prints one Markdown table: method, kind, flagged share, median score and the
threshold.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

KINDS = ("black", "grey", "white", "checker", "salt-pepper", "rectangles", "ramp", "uniform", "low-contrast")


def make_kind(kind: str, n: int, size: int, channels: int, seed: int = 0) -> torch.Tensor:
    """(n, channels, size, size) float32 images in [-1, 1] of one kind, seeded."""
    g = np.random.default_rng([seed, KINDS.index(kind)])
    shape = (n, channels, size, size)
    if kind in ("black", "grey", "white"):
        return torch.full(shape, {"black": -1.0, "grey": 0.0, "white": 1.0}[kind])
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    out = np.empty(shape, dtype=np.float32)
    for i in range(n):
        if kind == "checker":
            cell = g.integers(2, 8)
            img = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 1.0, -1.0)
        elif kind == "salt-pepper":
            img = g.choice([-1.0, 1.0], size=(size, size), p=[0.7, 0.3])
        elif kind == "rectangles":
            img = np.full((size, size), -1.0)
            for _ in range(g.integers(2, 6)):
                y0, x0 = g.integers(0, size - 4, 2)
                h, w = g.integers(3, size // 2, 2)
                img[y0:y0 + h, x0:x0 + w] = g.uniform(-0.5, 1.0)
        elif kind == "ramp":
            angle = g.uniform(0, 2 * np.pi)
            r = np.cos(angle) * xx + np.sin(angle) * yy
            img = 2 * (r - r.min()) / (r.max() - r.min()) - 1
        elif kind == "uniform":
            img = g.uniform(-1, 1, (size, size))
        else:  # low-contrast noise around the background
            img = -0.8 + 0.2 * g.uniform(-1, 1, (size, size))
        out[i] = img[None]
    return torch.from_numpy(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="fmnist6", help="run config (name or YAML) whose methods are used")
    p.add_argument("--method", nargs="+", default=["mds", "diffguard-cfg"])
    p.add_argument("--n", type=int, default=16, help="images per kind")
    p.add_argument("--val", type=int, default=200, help="seeded ID-val images for the threshold")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME.KEY=VALUE")
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)

    from diffguard.guard.export import guard_from_config
    from diffguard.report.tables import markdown_table
    from diffguard.run.run_config import load_run_config
    from diffguard.sysinfo import machine

    if args.threads:
        torch.set_num_threads(args.threads)
    over = list(args.overrides) + ([f"data_root={args.data_root!r}"] if args.data_root else [])
    cfg = load_run_config(args.config, over)
    rows = []
    for name in args.method:
        t0 = time.perf_counter()
        guard, runner, _ = guard_from_config(cfg, name, args.val, args.batch_size)
        guard.batch_size = args.batch_size
        size, channels = runner.spec.image_size, runner.spec.channels
        for kind in KINDS:
            res = guard.score(make_kind(kind, args.n, size, channels))
            rows.append({"method": guard.title, "kind": kind, "flagged": f"{100 * np.mean(res.is_ood):.0f} %",
                         "median score": f"{np.median(res.score):.4g}", "threshold": f"{guard.threshold:.4g}"})
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"\nshare flagged OOD at the 95 %-TPR threshold of {args.val} ID-val images; {args.n} images per kind\n")
    print(markdown_table(rows))
    print(f"\nmachine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
