"""Galleries: image conversion, extreme picking (ties, NaN), figure and PNG files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffguard.report.gallery import GalleryItem, gallery_figure, pick_extremes, save_gallery, to_uint8
from diffguard.report.tables import ScoreTable


def test_to_uint8_maps_range_and_layout() -> None:
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, -3.0, 2.0, 1 / 127.5 - 1]).reshape(1, 1, 2, 4)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 4, 1)
    assert out[0, :, :, 0].tolist() == [[0, 64, 128, 191], [255, 0, 255, 1]]
    rgb = torch.stack([torch.full((2, 3), -1.0), torch.zeros(2, 3), torch.ones(2, 3)]).unsqueeze(0)
    assert to_uint8(rgb)[0, 1, 2].tolist() == [0, 128, 255]


@pytest.mark.parametrize("bad", [torch.zeros(1, 2, 4, 4), torch.zeros(3, 4, 4),
                                 torch.zeros(1, 1, 4, 4, dtype=torch.uint8)])
def test_to_uint8_refuses_bad_shapes(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="float tensor"):
        to_uint8(bad)


def test_to_uint8_refuses_nan() -> None:
    x = torch.zeros(2, 3, 4, 4)
    x[1, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        to_uint8(x)


def ties_table() -> ScoreTable:
    names = np.array(["a"] * 6 + ["b"] * 2)
    return ScoreTable(names, {"a": "near", "b": "id"}, ids=np.array([10, 3, 7, 8, 1, 2, 0, 4]),
                      labels=np.full(8, -1), predictions=np.zeros(8, np.int64),
                      scores={"s": np.array([0.5, 0.9, 0.5, 0.9, 0.1, np.nan, 99.0, -99.0])})


def test_pick_extremes_breaks_ties_by_id_and_skips_nan() -> None:
    most, least = pick_extremes(ties_table(), "s", "a", 3)
    assert most.tolist() == [3, 8, 7] and least.tolist() == [1, 7, 10]
    assert most.dtype == np.int64
    most, least = pick_extremes(ties_table(), "s", "a", 10)
    assert most.tolist() == [3, 8, 7, 10, 1] and least.tolist() == [1, 7, 10, 3, 8]
    assert [a.size for a in pick_extremes(ties_table(), "s", "a", 0)] == [0, 0]


def test_pick_extremes_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be"):
        pick_extremes(ties_table(), "s", "a", -1)
    with pytest.raises(KeyError, match="methods in this table"):
        pick_extremes(ties_table(), "t", "a", 1)
    with pytest.raises(KeyError, match="sets in this table"):
        pick_extremes(ties_table(), "s", "c", 1)


def items(n: int = 5, channels: int = 1, side: int = 28) -> list[GalleryItem]:
    rng = np.random.default_rng(0)
    return [GalleryItem("near, odd/set", i, 0.5 * i, rng.integers(0, 256, (side, side, channels), dtype=np.uint8),
                        rng.integers(0, 256, (side, side, channels), dtype=np.uint8), label=-1 if i else None,
                        prediction=i) for i in range(n)]


def test_gallery_item_refuses_bad_images() -> None:
    good = np.zeros((28, 28, 1), np.uint8)
    with pytest.raises(ValueError, match="to_uint8"):
        GalleryItem("a", 0, 0.0, np.zeros((28, 28, 1), np.float32), good)
    with pytest.raises(ValueError, match="to_uint8"):
        GalleryItem("a", 0, 0.0, good, np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        GalleryItem("a", 0, 0.0, good, np.zeros((32, 32, 1), np.uint8))
    assert items(2)[1].caption() == "id 1 · score 0.5\nlabel -1 · pred 1"


@pytest.mark.parametrize("channels", [1, 3])
def test_gallery_figure_png(channels: int) -> None:
    png = gallery_figure(items(5, channels), "MSP / near, most OOD")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="no items"):
        gallery_figure([], "empty")


def test_save_gallery_writes_exact_pngs(tmp_path: Path) -> None:
    gallery = items(3, 3, side=8) + items(1, 1, side=8)
    paths = save_gallery(gallery, tmp_path / "g")
    assert [p.name for p in paths[:2]] == ["000-near-odd-set-id0-input.png", "000-near-odd-set-id0-synthesis.png"]
    assert len(paths) == 9 and paths[-1].name == "index.csv"
    for item, (inp, syn) in zip(gallery, zip(paths[0:8:2], paths[1:8:2])):
        for path, image in ((inp, item.input), (syn, item.synthesis)):
            got = np.asarray(Image.open(path))
            np.testing.assert_array_equal(got.reshape(image.shape), image)
    with open(paths[-1], newline="") as handle:
        index = list(csv.DictReader(handle))
    assert index[1]["set"] == "near, odd/set" and index[1]["score"] == "0.5" and index[0]["label"] == ""
    assert not [p for p in (tmp_path / "g").iterdir() if p.name.endswith(".tmp")]
