"""``diffguard models check``: the quality figures of a classifier and diffusion model pair, on the fmnist6 test set
or (``--data BENCHMARK.yaml``) on a benchmark's ID test set (the set with role ``id``).

1. Classifier accuracy on the known-class test images (target >= 90 %).
2. DDIM inversion then reconstruction of ``n_recon`` seeded known-class test images (``steps`` even-spaced steps,
   null label, eta 0, exact convention: data at the clean level, eps at the current level): mean PSNR on [0, 1]
   (target >= 25 dB).
3. Class-conditional DDIM samples (``steps`` steps, classifier-free guidance ``cfg_scale``), ``n_per_class`` per
   known class from seeded noise: share on which the classifier agrees with the conditioning label (target >= 85 %).
   A PNG grid (one row per class) is saved.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.data.fmnist6 import KNOWN_NAMES, load_fmnist6
from diffguard.diffusion.ddim import ddim_invert, ddim_sample
from diffguard.diffusion.early_stop import psnr
from diffguard.diffusion.respace import even_levels
from diffguard.guidance.cfg import cfg_eps, label_eps
from diffguard.model_files import ModelFileError, classifier_config, diffusion_info, load_classifier, shipped_path
from diffguard.sysinfo import machine
from diffguard.train.common import iterate_minibatches, pick_device
from diffguard.bench.open_sets import open_benchmark, resolve_benchmark

TARGETS = {"classifier_accuracy": 0.90, "recon_psnr_db": 25.0, "cfg_sample_agreement": 0.85}


@dataclass(frozen=True)
class QualityCheck:
    n_recon: int = 500
    n_per_class: int = 100
    steps: int = 50
    cfg_scale: float = 3.0
    seed: int = 0
    batch_size: int = 250


@torch.no_grad()
def classifier_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int, dev: torch.device) -> float:
    pred = torch.cat([model(b.to(dev)).argmax(1).cpu() for b in iterate_minibatches(x, bs)])
    return float((pred == y).float().mean())


@torch.no_grad()
def reconstruction_psnr(backend: PixelBackend, x: torch.Tensor, steps: int, bs: int, dev: torch.device) -> torch.Tensor:
    """Invert each image to the top level with the null label and sample back; returns per-image PSNR (N,)."""
    levels = even_levels(backend.alphas_cumprod, steps)
    out = []
    for xb in iterate_minibatches(x, bs):
        xb = xb.to(dev)
        eps = label_eps(backend.eps, torch.full((xb.shape[0],), backend.null_label))
        z, lvl = ddim_invert(eps, xb, levels)
        rec = backend.decode(ddim_sample(eps, z, levels, start=lvl))
        out.append(psnr(rec, xb).cpu())
    return torch.cat(out)


@torch.no_grad()
def cfg_samples(backend: PixelBackend, labels: torch.Tensor, steps: int, scale: float, seed: int, bs: int,
                dev: torch.device, shape: tuple[int, int, int]) -> torch.Tensor:
    """Sample from seeded Gaussian noise at the top level with CFG; returns images (N, C, H, W) in [-1, 1]."""
    levels = even_levels(backend.alphas_cumprod, steps)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((labels.shape[0], *shape), generator=gen)
    out = []
    for zb, yb in zip(iterate_minibatches(noise, bs), iterate_minibatches(labels, bs)):
        eps = cfg_eps(backend.eps, yb, backend.null_label, scale)
        out.append(backend.decode(ddim_sample(eps, zb.to(dev), levels, start=len(levels) - 1)).cpu())
    return torch.cat(out)


def save_grid(images: torch.Tensor, rows: int, path: Path, scale: int = 2) -> None:
    """Save (rows * cols, C, H, W) images in [-1, 1] (C = 1 or 3) as one grayscale or RGB PNG grid (row-major)."""
    n, c, h, w = images.shape
    cols = n // rows
    u8 = ((images[: rows * cols].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grid = u8.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
    grid = np.ascontiguousarray(grid[..., 0] if c == 1 else grid)
    Image.fromarray(grid).resize((cols * w * scale, rows * h * scale), Image.NEAREST).save(path)


@dataclass(frozen=True)
class CheckData:
    """The ID test images of a check: images (N, C, H, W) in [-1, 1], labels (N,) in [0, K), one name per class."""

    benchmark: str
    test_set: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]


def check_data(data: str | os.PathLike[str] | None, data_root: str | None) -> CheckData:
    """fmnist6's ``test`` set (``data`` None), else the ID test set of the benchmark ``data`` names, in memory."""

    spec = None if data is None else resolve_benchmark(data, ("id",), "diffguard models check")
    if spec is None or spec.source == "fmnist6":
        test = load_fmnist6(("test",), data_root)["test"]
        return CheckData("fmnist6", "test", test.images, test.labels, KNOWN_NAMES)
    src = open_benchmark(spec, data_root, [spec.test_set])[spec.test_set]
    x = torch.cat([src.load(range(i, min(i + 512, len(src)))) for i in range(0, len(src), 512)])
    names = spec.class_names or tuple(f"class {i}" for i in range(spec.num_classes))
    return CheckData(spec.name, spec.test_set, x, src.labels, tuple(names))


def _check_fit(classifier_dir: Path | None, diffusion_dir: Path | None, data: CheckData) -> None:
    """ModelFileError when a model was made for other images or classes than ``data``'s."""
    k, (c, h) = len(data.class_names), data.images.shape[1:3]
    clf = classifier_config(classifier_dir)
    diff = diffusion_info(diffusion_dir)
    for kind, folder, got in (("classifier", classifier_dir, (clf["num_classes"], clf["in_channels"],
                                                              clf.get("resolution", 28))),
                              ("diffusion", diffusion_dir, (diff["num_classes"], diff["channels"],
                                                            diff["resolution"]))):
        if tuple(got) != (k, c, h):
            raise ModelFileError(
                f"the {kind} model in {folder or shipped_path(kind)} has {got[0]} classes for {got[1]}x{got[2]}x"
                f"{got[2]} images; benchmark {data.benchmark!r} has {k} classes of {c}x{h}x{h}: pass --{kind} with a "
                f"folder made by `diffguard train {kind} --data <the benchmark>`")


def run_quality_check(check: QualityCheck, out: Path, classifier_dir: Path | None = None,
                      diffusion_dir: Path | None = None, data_root: str | None = None,
                      device: str = "auto", data: str | os.PathLike[str] | None = None) -> dict:
    """Measure the three figures, print a Markdown table, write ``quality.json``, ``quality.md`` and
    ``samples.png`` to ``out``. Returns the JSON record.

    ``data``: a benchmark (definition YAML or registered name) whose ID test set to use; None = fmnist6's test set.
    """
    dev = pick_device(device)
    test = check_data(data, data_root)
    _check_fit(classifier_dir, diffusion_dir, test)
    out.mkdir(parents=True, exist_ok=True)
    num_classes = len(test.class_names)
    clf = load_classifier(classifier_dir).to(dev)
    backend = PixelBackend.from_folder(diffusion_dir)
    backend.unet.to(dev)
    t0 = time.monotonic()
    acc = classifier_accuracy(clf, test.images, test.labels, 500, dev)
    pick = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(check.seed))[: check.n_recon]
    psnr = reconstruction_psnr(backend, test.images[pick], check.steps, check.batch_size, dev)
    labels = torch.arange(num_classes).repeat_interleave(check.n_per_class)
    samples = cfg_samples(backend, labels, check.steps, check.cfg_scale, check.seed + 1, check.batch_size, dev,
                          tuple(test.images.shape[1:]))
    with torch.no_grad():
        pred = torch.cat([clf(b.to(dev)).argmax(1).cpu() for b in iterate_minibatches(samples, 500)])
    agree = float((pred == labels).float().mean())
    per_class = {test.class_names[c]: float((pred[labels == c] == c).float().mean()) for c in range(num_classes)}
    keep = min(10, check.n_per_class)
    grid_idx = torch.cat([torch.arange(c * check.n_per_class, c * check.n_per_class + keep)
                          for c in range(num_classes)])
    save_grid(samples[grid_idx], num_classes, out / "samples.png")
    record = {
        "check": asdict(check), "machine": machine(), "device": str(dev), "wall_s": round(time.monotonic() - t0, 1),
        "data": {"benchmark": test.benchmark, "test_set": test.test_set, "test_images": len(test.labels)},
        "classifier": str(classifier_dir or shipped_path("classifier")),
        "diffusion": str(diffusion_dir or shipped_path("diffusion")),
        "figures": {"classifier_accuracy": acc, "recon_psnr_db": float(psnr.mean()),
                    "cfg_sample_agreement": agree},
        "recon_psnr_db_min": float(psnr.min()), "recon_psnr_db_median": float(psnr.median()),
        "agreement_per_class": per_class,
    }
    (out / "quality.json").write_text(json.dumps(record, indent=2) + "\n")
    table = format_table(record)
    (out / "quality.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten: {out / 'quality.json'}, {out / 'quality.md'}, {out / 'samples.png'}")
    return record


def format_table(record: dict) -> str:
    """Markdown table of the figures against their targets."""
    c = record["check"]
    d = record.get("data", {"benchmark": "fmnist6", "test_set": "test", "test_images": 6000})
    rows = [
        (f"classifier accuracy, {d['benchmark']} {d['test_set']} ({d['test_images']} images)", "classifier_accuracy",
         "{:.2%}", "{:.0%}"),
        (f"DDIM invert + reconstruct, {c['steps']} steps, null label: mean PSNR ({c['n_recon']} test images)",
         "recon_psnr_db", "{:.2f} dB", "{:.0f} dB"),
        (f"CFG samples (scale {c['cfg_scale']:g}, {c['steps']} steps, {c['n_per_class']}/class): classifier agrees",
         "cfg_sample_agreement", "{:.2%}", "{:.0%}"),
    ]
    lines = ["| figure | measured | target | pass |", "|---|---|---|---|"]
    for label, key, fmt, tfmt in rows:
        v, target = record["figures"][key], TARGETS[key]
        lines.append(f"| {label} | {fmt.format(v)} | >= {tfmt.format(target)} | {'yes' if v >= target else 'NO'} |")
    lines.append(f"\nmachine: {record['machine']}; device {record['device']}; wall time {record['wall_s']} s")
    return "\n".join(lines)
