"""Shared fixtures: a fake Fashion-MNIST folder (valid IDX files with random content) and tiny models."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (gzipped when ``compress``)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    return path


@pytest.fixture(scope="session")
def fake_fmnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the four Fashion-MNIST IDX files at full size (random images, balanced labels).

    Images of class c are brighter in a class-specific region, so tiny models can learn something.
    """
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(123)
    for name, n, gz in (("train", 60000, False), ("t10k", 10000, True)):
        labels = np.tile(np.arange(10), n // 10)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for c in range(10):
            images[labels == c, 2 * c : 2 * c + 8, 4:24] += 180
        suffix = ".gz" if gz else ""
        write_idx(root / f"{name}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{name}-labels-idx1-ubyte{suffix}", labels, gz)
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, fake_fmnist_root: Path) -> tuple[Path, Path]:
    """(classifier folder, diffusion folder) of tiny models trained for 2 steps on the fake data."""
    from diffguard.train.train_classifier import ClassifierTrainConfig, train_classifier
    from diffguard.train.train_diffusion import DiffusionTrainConfig, train_diffusion

    root = tmp_path_factory.mktemp("tiny_models")
    train_classifier(ClassifierTrainConfig(steps=2, batch_size=8, width=4, limit=64, warmup=1),
                     root / "clf", root / "ck_clf", fake_fmnist_root, "cpu")
    train_diffusion(DiffusionTrainConfig(steps=2, batch_size=8, channels=(8, 16, 16), attention_lowest=False,
                                         limit=64, warmup=1), root / "diff", root / "ck_diff", fake_fmnist_root, "cpu")
    return root / "clf", root / "diff"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[Path, Path], fake_fmnist_root: Path) -> Path:
    """A finished tiny benchmark run (tests/guard_fixtures.py)."""
    from guard_fixtures import make_run

    return make_run(tmp_path_factory.mktemp("tiny_run"), tiny_models, fake_fmnist_root)


@pytest.fixture(scope="session")
def tiny_guard(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """The band fusion ``dg+knn`` of :func:`tiny_run` exported as a guard folder (cascade: DiffGuard on the band)."""
    from guard_fixtures import make_guard

    return make_guard(tmp_path_factory.mktemp("tiny_guard") / "guard", tiny_run)
