"""Throughput of DiffGuard against its network-evaluation floor.

For a preset and the shipped (or given) models, scores N fmnist6 images (half ID ``test``, half ``near-fmnist``) in
batches and reports images/s, network evaluations per image (diffusion network; classifier forward, and forward +
backward), the floor (those calls timed bare at the same batch sizes) and the ratio end-to-end / floor.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/throughput.py --preset fmnist6-clean-grad fmnist6-cfg --n 128 --threads 2

Prints one Markdown table and writes ``throughput.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import fmnist6_classifier
from diffguard.data.fmnist6 import load_fmnist6
from diffguard.perf.throughput import measure, network_modules
from diffguard.detectors.diffguard_presets import PRESETS, apply_overrides, diffguard_detector
from diffguard.sysinfo import command_line, machine


def fmnist6_images(n: int, data_root: str | None = None) -> torch.Tensor:
    """n images: the first n - n // 2 of the ID test set, then the first n // 2 of near-fmnist (N, 1, 28, 28)."""
    sets = load_fmnist6(("test", "near-fmnist"), data_root)
    return torch.cat([sets["test"].images[: n - n // 2], sets["near-fmnist"].images[: n // 2]])


def run_preset(preset: str, clf: torch.nn.Module, backend: object, x: torch.Tensor, batch_size: int,
               overrides: list[str], repeats: int = 3) -> dict:
    """Warm up on 2 images, then measure one pass over x. Returns a JSON-able row."""
    kwargs = apply_overrides(PRESETS.create(preset), overrides)
    det = diffguard_detector(clf, backend, preset, **kwargs)
    det.analyze(x[:2])
    tp, outs = measure(lambda xb, ids: det.analyze(xb, ids=ids), x, batch_size, network_modules(det), repeats)
    scores = torch.cat([o.score for o in outs])
    return {"preset": preset, "overrides": overrides, **tp.as_dict(), "score_mean": float(scores.mean())}


def table(rows: list[dict]) -> str:
    kinds = sorted({k for r in rows for k in r["evals_per_image"]})
    head = "| preset | images | img/s | " + " | ".join(f"{k} / img" for k in kinds)
    lines = [head + " | floor s/img | end-to-end s/img | ratio |", "|---" * (len(kinds) + 6) + "|"]
    for r in rows:
        ev = " | ".join(f"{r['evals_per_image'].get(k, 0):.1f}" for k in kinds)
        lines.append(f"| {r['preset']} | {r['images']} | {r['images_per_s']:.2f} | {ev} | "
                     f"{r['floor_seconds'] / r['images']:.4f} | {r['seconds'] / r['images']:.4f} | {r['ratio']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", default=["fmnist6-clean-grad", "fmnist6-cfg"], choices=PRESETS.list("fmnist6*"))
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per distinct network call for the floor")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override, e.g. reference=unguided")
    p.add_argument("--data-root", default=None)
    p.add_argument("--classifier", default=None, help="classifier folder (default: the shipped one)")
    p.add_argument("--diffusion", default=None, help="diffusion folder (default: the shipped one)")
    p.add_argument("--out", type=Path, default=Path("runs/throughput"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    x = fmnist6_images(args.n, args.data_root)
    clf, backend = fmnist6_classifier(args.classifier), PixelBackend.from_folder(args.diffusion)
    rows = []
    for preset in args.preset:
        rows.append(run_preset(preset, clf, backend, x, args.batch_size, args.overrides, args.repeats))
        print(f"{preset}: {rows[-1]['images_per_s']:.2f} img/s, ratio {rows[-1]['ratio']:.3f}", file=sys.stderr)
    record = {"command": command_line(), "machine": machine(), "n": args.n, "batch_size": args.batch_size,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nthroughput vs network-evaluation floor, n = {args.n}, batch {args.batch_size}\n")
    print(table(rows))
    print(f"\nmachine: {record['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
