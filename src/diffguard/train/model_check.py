"""``diffguard models check``: the quality figures of a classifier and diffusion model pair, on the fmnist6 test set
or (``--data BENCHMARK.yaml``) on a benchmark's ID test set (the set with role ``id``).

The two models are model specs, as a run config's ``classifier:`` / ``diffusion:`` (see
:mod:`diffguard.specs.model_specs`), built by the same builders as the benchmark runner: None (the shipped fmnist6
models), a folder path, or a mapping with a ``type``. On the command line (:func:`parse_model_spec`) a mapping is
given inline as YAML / JSON (``'{type: torchvision, arch: resnet18, weights: w.pth, num_classes: 3}'``) and a model
shipped in the package by its name (``fmnist6-classifier-s1``, ``fmnist6-diffusion-large``).

1. Classifier accuracy on the known-class test images (target >= 90 %).
2. DDIM inversion then reconstruction of ``n_recon`` seeded known-class test images (``steps`` even-spaced steps,
   null label, eta 0, exact convention: data at the clean level, eps at the current level): mean PSNR on [0, 1]
   (target >= 25 dB).
3. Class-conditional DDIM samples (``steps`` steps, classifier-free guidance ``cfg_scale``), ``n_per_class`` per
   known class from seeded noise: share on which the classifier agrees with the conditioning label (target >= 85 %).
   A PNG grid (one row per class) is saved. An unconditional diffusion model (no null label) has no such samples:
   the figure is "n/a" and the grid shows unconditional samples.

Latent models invert and sample in their latent space (``encode`` / ``decode``); images the backend resizes are
compared at the input's size.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from diffguard.bench.open_sets import open_benchmark, resolve_benchmark
from diffguard.data.fmnist6 import KNOWN_NAMES, load_fmnist6
from diffguard.devices import to_device
from diffguard.diffusion.ddim import EpsFn, ddim_invert, ddim_sample
from diffguard.diffusion.early_stop import psnr
from diffguard.diffusion.respace import even_levels
from diffguard.errors import ConfigError
from diffguard.guidance.cfg import cfg_eps
from diffguard.model_files import ModelFileError, classifier_config, diffusion_info, shipped_or_path, shipped_path
from diffguard.specs.model_specs import ModelSpec, build_backend, build_classifier
from diffguard.sysinfo import machine
from diffguard.train.common import iterate_minibatches, pick_device

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


def _null_eps(backend: Any) -> EpsFn:
    """The unconditional eps (the null label of a class-conditional model; ``y=None`` means it for every backend)."""
    return lambda x, t, rows: backend.eps(x, t, None)


@torch.no_grad()
def reconstruction_psnr(backend: Any, x: torch.Tensor, steps: int, bs: int, dev: torch.device) -> torch.Tensor:
    """Invert each image (encoded into the backend's space) to the top level with the null label and sample back;
    returns per-image PSNR (N,) against the input, at the input's size."""
    levels = even_levels(backend.alphas_cumprod, steps)
    out = []
    for xb in iterate_minibatches(x, bs):
        xb = xb.to(dev)
        z, lvl = ddim_invert(_null_eps(backend), backend.encode(xb), levels)
        rec = backend.decode(ddim_sample(_null_eps(backend), z, levels, start=lvl))
        if rec.shape[-2:] != xb.shape[-2:]:
            rec = F.interpolate(rec, size=xb.shape[-2:], mode="bilinear", align_corners=False, antialias=False)
        out.append(psnr(rec.clamp(-1, 1), xb).cpu())
    return torch.cat(out)


@torch.no_grad()
def cfg_samples(backend: Any, labels: torch.Tensor, steps: int, scale: float, seed: int, bs: int,
                dev: torch.device, shape: tuple[int, int, int]) -> torch.Tensor:
    """Sample from seeded Gaussian noise of ``shape`` (the backend's space) at the top level with CFG (unconditional
    samples for a model without null label); returns images (N, C, H, W) in [-1, 1]."""
    levels = even_levels(backend.alphas_cumprod, steps)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((labels.shape[0], *shape), generator=gen)
    out = []
    for zb, yb in zip(iterate_minibatches(noise, bs), iterate_minibatches(labels, bs)):
        eps = (_null_eps(backend) if backend.null_label is None
               else cfg_eps(backend.eps, yb, backend.null_label, scale))
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


def parse_model_spec(text: str | os.PathLike[str] | Mapping[str, Any] | None, kind: str) -> ModelSpec:
    """A ``--classifier`` / ``--diffusion`` value as the model spec a run config's ``classifier:`` / ``diffusion:``
    takes: None (the shipped model), an inline YAML / JSON mapping (text starting with ``{``, read with
    ``yaml.safe_load``), the name of a model folder shipped in the package (``fmnist6-diffusion-large`` becomes
    ``{type: shipped, folder: fmnist6-diffusion-large}``) or a folder path. A mapping is returned unchanged."""
    if text is None or isinstance(text, Mapping):
        return text
    value = str(text).strip()
    if value.startswith("{"):
        try:
            spec = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--{kind} {value!r} is not a valid YAML / JSON mapping: {err}") from None
        if not isinstance(spec, dict):
            raise ConfigError(f"--{kind} {value!r}: expected a mapping such as '{{type: ..., ...}}'")
        return spec
    shipped = shipped_or_path(value)
    if shipped is not None and shipped != Path(value):  # not a path here, but a folder shipped in the package
        return {"type": "shipped", "folder": value}
    return value


def train_folder(spec: ModelSpec, kind: str) -> Path | None:
    """The ``diffguard train`` folder (shipped or not) a spec names, None when the spec is another kind of model
    (its files then say nothing about its classes and image size, and it gets no model card)."""
    if spec is None:
        return shipped_path(kind)
    if isinstance(spec, Mapping):
        if spec.get("type") not in ("shipped", "fmnist6") or not set(spec) <= {"type", "folder"}:
            return None
        return shipped_or_path(spec.get("folder")) or shipped_path(kind)
    folder = Path(spec).expanduser()
    if kind == "diffusion":
        return folder if (folder / "diffguard.json").is_file() else None
    config = folder / "config.json"
    return folder if config.is_file() and "arch" in classifier_config(folder) else None


def spec_label(spec: ModelSpec, kind: str) -> str | dict[str, Any]:
    """A spec as the JSON record shows it: a folder path, or the mapping."""
    if isinstance(spec, Mapping):
        return dict(spec)
    return str(spec if spec is not None else shipped_path(kind))


def _check_fit(classifier_dir: Path | None, diffusion_dir: Path | None, data: CheckData) -> None:
    """ModelFileError when a ``diffguard train`` model (None: not one) was made for other images or classes than
    ``data``'s."""
    k, (c, h) = len(data.class_names), data.images.shape[1:3]
    found = []
    if classifier_dir is not None:
        clf = classifier_config(classifier_dir)
        found.append(("classifier", classifier_dir,
                      (clf["num_classes"], clf["in_channels"], clf.get("resolution", 28))))
    if diffusion_dir is not None:
        diff = diffusion_info(diffusion_dir)
        found.append(("diffusion", diffusion_dir, (diff["num_classes"], diff["channels"], diff["resolution"])))
    for kind, folder, got in found:
        if tuple(got) != (k, c, h):
            raise ModelFileError(
                f"the {kind} model in {folder} has {got[0]} classes for {got[1]}x{got[2]}x"
                f"{got[2]} images; benchmark {data.benchmark!r} has {k} classes of {c}x{h}x{h}: pass --{kind} with a "
                f"folder made by `diffguard train {kind} --data <the benchmark>`, or a model spec for it")


def _check_models(classifier: Any, backend: Any, data: CheckData, specs: tuple[ModelSpec, ModelSpec]) -> None:
    """ConfigError when built models cannot serve ``data``: another number of classes, other image channels (a
    pixel model), or a null label among the class labels (the checks a model spec allows without its files)."""
    k, c = len(data.class_names), int(data.images.shape[1])
    n = getattr(classifier, "num_classes", None)
    if n is not None and int(n) != k:
        raise ConfigError(f"the classifier {spec_label(specs[0], 'classifier')} has {n} classes; benchmark "
                          f"{data.benchmark!r} has {k}: give the classifier trained for it")
    channels = getattr(backend, "channels", None)
    if channels is not None and not getattr(backend, "is_latent", False) and int(channels) != c:
        raise ConfigError(f"the diffusion model {spec_label(specs[1], 'diffusion')} works on {channels}-channel "
                          f"images; benchmark {data.benchmark!r} has {c}: give the diffusion model trained for it")
    null = backend.null_label
    if null is not None and 0 <= int(null) < k:
        raise ConfigError(f"the diffusion model's null label {null} is one of benchmark {data.benchmark!r}'s class "
                          f"labels 0..{k - 1}: give the diffusion model trained for its classes (or its null_label)")


def run_quality_check(check: QualityCheck, out: Path, classifier: ModelSpec = None, diffusion: ModelSpec = None,
                      data_root: str | None = None, device: str = "auto",
                      data: str | os.PathLike[str] | None = None) -> dict:
    """Measure the three figures, print a Markdown table, write ``quality.json``, ``quality.md`` and
    ``samples.png`` to ``out``. Returns the JSON record.

    ``classifier``, ``diffusion``: model specs as in a run config (a folder path, a mapping with a ``type``, None =
    the shipped model; :func:`parse_model_spec` reads them from the command line), built by
    :func:`~diffguard.specs.model_specs.build_classifier` / :func:`~diffguard.specs.model_specs.build_backend`.
    ``data``: a benchmark (definition YAML or registered name) whose ID test set to use; None = fmnist6's test set.
    """
    dev = pick_device(device)
    test = check_data(data, data_root)
    _check_fit(train_folder(classifier, "classifier"), train_folder(diffusion, "diffusion"), test)
    clf = to_device(build_classifier(classifier), dev)
    backend = to_device(build_backend(diffusion), dev)
    _check_models(clf, backend, test, (classifier, diffusion))
    out.mkdir(parents=True, exist_ok=True)
    num_classes = len(test.class_names)
    t0 = time.monotonic()
    acc = classifier_accuracy(clf, test.images, test.labels, 500, dev)
    pick = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(check.seed))[: check.n_recon]
    psnr = reconstruction_psnr(backend, test.images[pick], check.steps, check.batch_size, dev)
    labels = torch.arange(num_classes).repeat_interleave(check.n_per_class)
    with torch.no_grad():
        shape = tuple(backend.encode(test.images[:1].to(dev)).shape[1:])  # the backend's space (latents, resized)
    samples = cfg_samples(backend, labels, check.steps, check.cfg_scale, check.seed + 1, check.batch_size, dev, shape)
    with torch.no_grad():
        pred = torch.cat([clf(b.to(dev)).argmax(1).cpu() for b in iterate_minibatches(samples, 500)])
    conditional = backend.null_label is not None
    agree = float((pred == labels).float().mean()) if conditional else None
    per_class = ({test.class_names[c]: float((pred[labels == c] == c).float().mean()) for c in range(num_classes)}
                 if conditional else {})
    keep = min(10, check.n_per_class)
    grid_idx = torch.cat([torch.arange(c * check.n_per_class, c * check.n_per_class + keep)
                          for c in range(num_classes)])
    save_grid(samples[grid_idx], num_classes, out / "samples.png")
    record = {
        "check": asdict(check), "machine": machine(), "device": str(dev), "wall_s": round(time.monotonic() - t0, 1),
        "data": {"benchmark": test.benchmark, "test_set": test.test_set, "test_images": len(test.labels)},
        "classifier": spec_label(classifier, "classifier"),
        "diffusion": spec_label(diffusion, "diffusion"),
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
        if v is None:  # CFG agreement of an unconditional diffusion model
            lines.append(f"| {label} | n/a (unconditional model) | >= {tfmt.format(target)} | n/a |")
            continue
        lines.append(f"| {label} | {fmt.format(v)} | >= {tfmt.format(target)} | {'yes' if v >= target else 'NO'} |")
    lines.append(f"\nmachine: {record['machine']}; device {record['device']}; wall time {record['wall_s']} s")
    return "\n".join(lines)
