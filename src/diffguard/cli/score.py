"""``diffguard score PATH``: DiffGuard scores for a folder of images or an image list, with a decision at a
threshold calibrated on in-distribution validation images at 95 % TPR (95 % of ID images are accepted).

Unreadable or non-image files are not fatal: each gets a row with status ``skipped`` and the reason.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffguard.eval.datasets import DataError, load_image, read_image_list

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def list_inputs(path: Path) -> list[Path]:
    """Files of a folder (sorted, not recursive) or the paths of an image list (relative to the list's folder)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        if not files:
            raise DataError(f"folder {path} holds no files to score")
        return files
    if path.is_file():
        return [path.parent / rel for rel, _ in read_image_list(path)]
    raise DataError(f"{path} is neither a folder of images nor an image list")


def load_inputs(files: list[Path], size: int, channels: int) -> tuple[list[int], torch.Tensor, dict[int, str]]:
    """Read what can be read: (indices of loaded files, images (B, C, size, size) in [-1, 1], skip reasons)."""
    ok, images, skipped = [], [], {}
    for i, f in enumerate(files):
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            skipped[i] = f"not an image file (suffix {f.suffix or 'none'})"
            continue
        try:
            images.append(load_image(f, size, channels))
            ok.append(i)
        except DataError as err:
            skipped[i] = str(err)
    stacked = torch.stack(images) if images else torch.empty(0, channels, size, size)
    return ok, stacked, skipped


def add(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("score", help="score a folder of images or an image list; decide at a calibrated threshold")
    s.add_argument("path", help="a folder of image files, or an image list (<relative/path> <label> per line)")
    s.add_argument("--preset", default="fmnist6-cfg", help="DiffGuard preset (default: fmnist6-cfg)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="DiffGuard option override, e.g. guidance.scale=5")
    s.add_argument("--calibration", default=None,
                   help="a benchmark results folder whose thresholds.json gives the threshold (with --method)")
    s.add_argument("--method", default=None, help="method name in --calibration (default: first DiffGuard one)")
    s.add_argument("--val-limit", type=int, default=200,
                   help="without --calibration: ID-validation images used to set the 95%%-TPR threshold")
    s.add_argument("--out", default="scores.csv", help="CSV with one row per file (default: scores.csv)")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder (for calibration)")
    s.add_argument("--classifier", default=None, help="fmnist6-format classifier folder (default: the shipped one)")
    s.add_argument("--diffusion", default=None, help="fmnist6-format diffusion folder (default: the shipped one)")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(run=run)


def calibrate(detector: Any, args: argparse.Namespace) -> tuple[float, str]:
    """Threshold and its source: a results folder's thresholds.json, or fresh scores on fmnist6 ID-val."""
    if args.calibration:
        path = Path(args.calibration) / "thresholds.json"
        if not path.is_file():
            raise DataError(f"{path} not found; run `diffguard benchmark` into that folder first")
        thr = json.loads(path.read_text())["thresholds"]
        name = args.method or next(iter(thr), None)
        if name not in thr:
            raise DataError(f"method {name!r} has no threshold in {path}; available: {sorted(thr)}")
        return float(thr[name]), f"{path} [{name}]"
    from diffguard.eval.benchmarks import get_benchmark, open_benchmark
    from diffguard.eval.rows import select_rows

    val = open_benchmark(get_benchmark("fmnist6"), args.data_root, ["val"])["val"]
    rows = select_rows(len(val), args.val_limit, 0, "val")
    scores = _score(detector, val.load(rows), val.ids[rows], args.batch_size)
    return float(np.quantile(scores, 0.95)), f"fmnist6 val, {len(rows)} images, 95% TPR"


def _score(detector: Any, x: torch.Tensor, ids: torch.Tensor, batch: int) -> np.ndarray:
    out = [detector.predict(x[i:i + batch], ids=ids[i:i + batch]).double().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.empty(0)


def run(args: argparse.Namespace) -> int:
    from diffguard.backends.pixel import PixelBackend
    from diffguard.classify.base import fmnist6_classifier
    from diffguard.detectors.diffguard import DiffGuard
    from diffguard.presets import PRESETS, apply_overrides

    if args.threads:
        torch.set_num_threads(args.threads)
    files = list_inputs(Path(args.path))
    classifier = fmnist6_classifier(args.classifier)
    backend = PixelBackend.from_folder(args.diffusion)
    detector = DiffGuard(classifier, backend, **apply_overrides(PRESETS.get(args.preset)(), list(args.overrides)))
    size = classifier.resolution[0] if classifier.resolution else 28
    ok, x, skipped = load_inputs(files, size, backend.channels if hasattr(backend, "channels") else 1)
    threshold, source = calibrate(detector, args)
    scores = _score(detector, x, torch.arange(len(ok)), args.batch_size)
    with torch.no_grad():
        preds = classifier.logits(x).argmax(1).tolist() if len(ok) else []
    by_file = {i: (s, p) for i, s, p in zip(ok, scores.tolist(), preds)}
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "status", "score", "prediction", "decision", "threshold", "reason"])
        for i, path in enumerate(files):
            if i in by_file:
                s, p = by_file[i]
                w.writerow([path, "ok", repr(s), p, "ood" if s > threshold else "id", repr(threshold), ""])
            else:
                w.writerow([path, "skipped", "", "", "", "", skipped[i]])
    flagged = int((scores > threshold).sum())
    print(f"scored {len(ok)} image(s), skipped {len(skipped)}; threshold {threshold:.6g} ({source}); "
          f"{flagged} flagged OOD; written to {args.out}")
    return 0
