"""The run configuration of a benchmark (what the CLI maps config files onto) and its row plan.

:class:`RunConfig` holds everything a run depends on; :func:`row_plan` turns it into the fixed rows per set that
the runner splits into batches. The plan (``RunConfig.plan_key``) is part of a results store's manifest, so a
store is only resumed under the same plan.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from diffguard.eval.benchmarks import BenchmarkSpec
from diffguard.eval.datasets import ImageSource
from diffguard.eval.methods import MethodConfig


@dataclass(frozen=True)
class FusionConfig:
    """"DiffGuard + X": ``baseline`` and ``diffguard`` are method names of the run; quantiles of the baseline's
    ID-validation scores bound the band that DiffGuard decides (see :mod:`diffguard.detectors.fusion`)."""

    baseline: str
    diffguard: str
    low_q: float = 0.5
    high_q: float = 0.99


@dataclass
class RunConfig:
    """Everything a benchmark run depends on (the CLI maps config files and ``--set`` overrides onto it).

    Args:
        benchmark: registered benchmark name (``fmnist6``, ``cifar10``, ``imagenet``).
        methods: the methods to run, in order (cheap ones first is wise).
        fusion: "DiffGuard + X" combinations to evaluate.
        sets: restrict to these sets (default: all of the benchmark).
        limit: at most this many samples per test / OOD set, drawn with ``limit_seed`` (None = all).
        val_limit: at most this many ID-validation samples (thresholds and fusion calibration).
        train_limit: at most this many ID-training samples for fitting KNN / ViM / MDS (None = all, OpenOOD's way).
        batch_size: images per batch (methods may override).
        classifier, diffusion: model folders or specs (None = the shipped fmnist6 models; see
            :mod:`diffguard.eval.models`).
        image_size: the benchmark images' side in pixels (None = the benchmark's; e.g. 224 for the GDM setting).
        ensemble: folders of all Deep-Ensemble members (None = the classifier plus the shipped
            ``fmnist6-classifier-s*`` folders).
        data_root: data folder (fmnist6: the Fashion-MNIST IDX files; others: OpenOOD's layout).
        gallery: input / synthesis pairs per end (most and least OOD) per set in the report.
        ablation: the name of the setting the methods vary (an ablation study); adds ``ablation.md`` and
            ``ablation.png`` (AUROC per variant) to the outputs.
        device: "auto" (``cuda:<local rank>`` when CUDA is available, else CPU), "cpu", "cuda", "cuda:N".
    """

    benchmark: str = "fmnist6"
    methods: list[MethodConfig] = field(default_factory=list)
    fusion: list[FusionConfig] = field(default_factory=list)
    sets: list[str] | None = None
    limit: int | None = None
    val_limit: int | None = 500
    train_limit: int | None = None
    limit_seed: int = 0
    batch_size: int = 64
    classifier: str | dict[str, Any] | None = None
    diffusion: str | dict[str, Any] | None = None
    ensemble: list[str] | None = None
    data_root: str | None = None
    image_size: int | None = None
    gallery: int = 6
    ablation: str | None = None
    device: str = "auto"

    def plan_key(self) -> dict[str, Any]:
        """The settings that define the work units; a results file is only resumed under the same ones."""
        return {k: getattr(self, k) for k in ("benchmark", "sets", "limit", "val_limit", "train_limit", "limit_seed",
                                              "batch_size", "classifier", "diffusion",
                                              "image_size")}

    def method(self, name: str) -> MethodConfig:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"no method {name!r} in this run; methods: {[m.name for m in self.methods]}")


def select_rows(n: int, limit: int | None, seed: int, set_name: str) -> np.ndarray:
    """Sorted row indices: all ``n``, or ``limit`` of them drawn with a generator seeded by (seed, set name)."""
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, zlib.crc32(set_name.encode())])
    return np.sort(rng.choice(n, size=limit, replace=False))


def row_plan(spec: BenchmarkSpec, sources: dict[str, ImageSource], cfg: RunConfig) -> dict[str, np.ndarray]:
    """Rows per set: ``train_limit`` of train (fits), ``val_limit`` of val, ``limit`` of the test and OOD sets."""
    plan = {}
    for name, src in sources.items():
        role = spec.get(name).role
        limit = cfg.train_limit if role == "train" else cfg.val_limit if role == "val" else cfg.limit
        plan[name] = select_rows(len(src), limit, cfg.limit_seed, name)
    return plan


def batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """A JSON-able view of the run configuration (for manifests and reports)."""
    d = asdict(cfg)
    d["methods"] = [m.as_dict() for m in cfg.methods]
    return d
