"""Label-swap separation: does the DiffGuard score tell a true label from a wrong one on the same image?

For N in-distribution images of an fmnist6 split, DiffGuard runs once guided by the true label and once by a wrong
label (drawn uniformly among the other classes with a fixed seed). The AUROC of "wrong" (positive) vs "true" is
reported for every distance of the preset. Use the ``val`` split to choose settings, ``test`` to report.

    python benchmarks/label_swap.py --preset fmnist6-cfg --split val --n 200 \
        --sweep guidance.cam_cut=0.1,0.2,0.3 --out runs/label-swap

Prints one Markdown table and writes ``label_swap.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import fmnist6_classifier
from diffguard.data.fmnist6 import NUM_CLASSES, load_fmnist6
from diffguard.detectors.diffguard import DiffGuard
from diffguard.detectors.diffguard_presets import PRESETS, apply_overrides
from diffguard.sysinfo import command_line, machine


def wrong_labels(y: torch.Tensor, seed: int) -> torch.Tensor:
    """A label different from y for every sample, uniform over the other classes, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return (y + torch.randint(1, NUM_CLASSES, y.shape, generator=gen)) % NUM_CLASSES


def run_config(det: DiffGuard, x: torch.Tensor, y: torch.Tensor, y_bad: torch.Tensor, bs: int) -> dict:
    """Scores with true and wrong labels (same images, same per-image crop seeds) and AUROC per distance."""
    true_d, bad_d = {n: [] for n in det.distances}, {n: [] for n in det.distances}
    t0 = time.monotonic()
    for i in tqdm(range(0, len(x), bs), desc="batches", leave=False):
        xb, ids = x[i : i + bs], torch.arange(i, min(i + bs, len(x)))
        res = det.analyze(torch.cat([xb, xb]), labels=torch.cat([y[i : i + bs], y_bad[i : i + bs]]),
                          ids=torch.cat([ids, ids]))
        for n, v in res.distances.items():
            true_d[n].append(v[: len(xb)])
            bad_d[n].append(v[len(xb):])
    out = {"seconds": round(time.monotonic() - t0, 1), "auroc": {}, "mean_true": {}, "mean_wrong": {}}
    for n in det.distances:
        t, b = torch.cat(true_d[n]), torch.cat(bad_d[n])
        labels = torch.cat([torch.zeros(len(t)), torch.ones(len(b))])
        out["auroc"][n] = float(roc_auc_score(labels.numpy(), torch.cat([t, b]).numpy()))
        out["mean_true"][n], out["mean_wrong"][n] = float(t.mean()), float(b.mean())
    return out


def configs(preset_kwargs: dict, fixed: list[str], sweep: str | None) -> list[tuple[str, dict]]:
    base = apply_overrides(preset_kwargs, fixed)
    if not sweep:
        return [("preset" + (" + " + ", ".join(fixed) if fixed else ""), base)]
    key, _, values = sweep.partition("=")
    return [(f"{key}={v}", apply_overrides(base, [f"{key}={v}"])) for v in values.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, choices=PRESETS.list("fmnist6*"))
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--n", type=int, default=200, help="images (a seeded random subset of the split)")
    p.add_argument("--set", dest="fixed", action="append", default=[], help="override, e.g. guidance.scale=5")
    p.add_argument("--sweep", default=None, help="one key over comma-separated values, e.g. inversion.cap=20,30")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--classifier", default=None, help="classifier folder (default: the shipped one)")
    p.add_argument("--diffusion", default=None, help="diffusion folder (default: the shipped one)")
    p.add_argument("--out", type=Path, default=Path("runs/label-swap"))
    args = p.parse_args(argv)

    data = load_fmnist6((args.split,), args.data_root)[args.split]
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[: args.n]
    x, y = data.images[pick], data.labels[pick]
    y_bad = wrong_labels(y, args.seed + 1)
    clf, backend = fmnist6_classifier(args.classifier), PixelBackend.from_folder(args.diffusion)
    rows = []
    for name, kwargs in configs(PRESETS.create(args.preset), args.fixed, args.sweep):
        det = DiffGuard(clf, backend, **kwargs)
        rows.append({"config": name, **run_config(det, x, y, y_bad, args.batch_size)})
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1]["auroc"].items()), file=sys.stderr)
    record = {"command": command_line(), "machine": machine(), "preset": args.preset, "split": args.split,
              "n": args.n, "seed": args.seed, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_swap.json").write_text(json.dumps(record, indent=2) + "\n")
    dists = list(rows[0]["auroc"])
    print(f"\nlabel-swap AUROC (wrong label = positive), preset {args.preset}, {args.split} split, n = {args.n}\n")
    print("| config | " + " | ".join(dists) + " | seconds |")
    print("|---|" + "---|" * (len(dists) + 1))
    for r in rows:
        print(f"| {r['config']} | " + " | ".join(f"{r['auroc'][d]:.4f}" for d in dists) + f" | {r['seconds']} |")
    print(f"\nmachine: {record['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
