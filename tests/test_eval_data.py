"""Image lists, image loading and benchmark specs (a tiny generated OpenOOD-style benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffguard.bench.definitions import BenchmarkSpec, SetSpec, get_benchmark
from diffguard.bench.open_sets import open_benchmark
from diffguard.bench.image_sources import DataError, ImageListSource, load_image, read_image_list


def make_imglist_benchmark(root: Path, n: int = 4, size: int = 12, channels: int = 3,
                           num_classes: int = 3) -> BenchmarkSpec:
    """A tiny OpenOOD layout: benchmark_imglist/tiny/*.txt and images_classic/<set>/*.png."""
    rng = np.random.default_rng(0)
    sets = [("train", "train"), ("val", "val"), ("test", "id"), ("near1", "near"), ("far1", "far")]
    for name, role in sets:
        folder = root / "images_classic" / name
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            shape = (size + 4, size + 2, 3) if channels == 3 else (size + 4, size + 2)
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"{i}.png")
            lines.append(f"{name}/{i}.png {i % num_classes if role in ('train', 'val', 'id') else -1}")
        lst = root / "benchmark_imglist" / "tiny" / f"{name}.txt"
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text("\n".join(lines) + "\n")
    specs = tuple(SetSpec(n_, r, f"benchmark_imglist/tiny/{n_}.txt", "images_classic") for n_, r in sets)
    return BenchmarkSpec("tiny", num_classes, size, channels, specs)


def test_read_image_list_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "a.txt"
    good.write_text("x/1.png 3\n\nx/2.png -1\n")
    assert read_image_list(good) == [("x/1.png", 3), ("x/2.png", -1)]
    bad = tmp_path / "b.txt"
    bad.write_text("x/1.png cat\n")
    with pytest.raises(DataError, match="integer label"):
        read_image_list(bad)
    (tmp_path / "c.txt").write_text("/abs/1.png 0\n")
    with pytest.raises(DataError, match="relative"):
        read_image_list(tmp_path / "c.txt")
    (tmp_path / "d.txt").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        read_image_list(tmp_path / "d.txt")
    with pytest.raises(DataError, match="does not exist"):
        read_image_list(tmp_path / "missing.txt")


def test_load_image_resizes_crops_and_scales(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 255  # white centre band: after resize to 10x20 and centre crop 10x10 it fills the crop
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", 10, 3)
    assert x.shape == (3, 10, 10) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[:, :, 3:7], torch.ones(3, 10, 4))
    assert load_image(tmp_path / "a.png", 10, 1).shape == (1, 10, 10)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="corrupt"):
        load_image(tmp_path / "bad.png", 10, 3)


def test_imglist_benchmark_opens_and_names_missing_lists(tmp_path: Path) -> None:
    spec = make_imglist_benchmark(tmp_path)
    sources = open_benchmark(spec, tmp_path)
    assert list(sources) == ["train", "val", "test", "near1", "far1"]
    test = sources["test"]
    assert isinstance(test, ImageListSource) and len(test) == 4
    assert test.load([0, 2]).shape == (2, 3, 12, 12)
    assert (sources["near1"].labels == -1).all() and (test.labels >= 0).all()
    (tmp_path / "benchmark_imglist/tiny/far1.txt").unlink()
    with pytest.raises(DataError, match="far1.txt"):
        open_benchmark(spec, tmp_path)


def test_label_out_of_range_is_refused(tmp_path: Path) -> None:
    spec = make_imglist_benchmark(tmp_path)
    lst = tmp_path / "benchmark_imglist/tiny/test.txt"
    lst.write_text(lst.read_text().replace(" 2\n", " 7\n"))
    with pytest.raises(DataError, match=r"outside \[0, 3\)"):
        open_benchmark(spec, tmp_path)


def test_registered_specs() -> None:
    cifar = get_benchmark("cifar10")
    assert [s.name for s in cifar.by_role("near")] == ["cifar100", "tin"]
    imagenet = get_benchmark("imagenet")
    assert {"species", "inaturalist", "openimage_o", "imagenet_o", "ssb_hard", "ninco"} == {
        s.name for s in imagenet.by_role("near")}
    with pytest.raises(KeyError, match="cifar10"):
        get_benchmark("cifar-10")
    with pytest.raises(DataError, match="--data-root"):
        open_benchmark(cifar, None)


def test_image_modes_and_sizes(tmp_path: Path) -> None:
    """Grayscale, RGBA, 16-bit and odd sizes load with the documented conversions; truncated files are refused."""
    gray = np.full((30, 50), 200, np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png", 8, 3)
    assert x.shape == (3, 8, 8) and torch.allclose(x, torch.full_like(x, 200 / 127.5 - 1), atol=1e-6)
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 0  # red, fully transparent: alpha is dropped, not composited
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", 10, 3)
    assert torch.allclose(x[0], torch.ones(10, 10)) and torch.allclose(x[1], -torch.ones(10, 10))
    deep = np.full((12, 12), 65535, np.uint16)
    deep[:6] = 32768
    Image.fromarray(deep).save(tmp_path / "d16.png")
    x = load_image(tmp_path / "d16.png", 12, 1)
    assert torch.allclose(x[0, 6:], torch.ones(6, 12)), "16-bit white must stay white"
    assert torch.allclose(x[0, :6], torch.full((6, 12), 128 / 127.5 - 1), atol=1e-6), "16-bit grey must not clip"
    data = (tmp_path / "g.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt"):
        load_image(tmp_path / "t.png", 8, 1)
