"""Galleries of input / synthesis pairs: the most and least OOD-looking samples of a set, as a figure and as PNGs."""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from diffguard.atomic_files import atomic_write_bytes, atomic_write_text
from diffguard.report.plots import figure_png
from diffguard.report.tables import ScoreTable

PAIRS_PER_ROW = 4
_MIN_SIDE = 96  # images are upscaled (nearest) by an integer factor until their height reaches this many pixels


@dataclass
class GalleryItem:
    """One sample of a gallery.

    Attributes:
        set: the sample's set name. id: its id in that set. score: its OOD score (higher = more OOD).
        input: uint8 (H, W, C) with C = 1 or 3, the image as given. synthesis: uint8 (H, W, C), same shape, the
            detector's synthesis of it. label, prediction: optional true class (-1 = OOD) and predicted class.
    """

    set: str
    id: int
    score: float
    input: np.ndarray
    synthesis: np.ndarray
    label: int | None = None
    prediction: int | None = None

    def __post_init__(self) -> None:
        for name in ("input", "synthesis"):
            image = getattr(self, name)
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                    or image.shape[2] not in (1, 3):
                shape = getattr(image, "shape", None)
                raise ValueError(f"GalleryItem.{name} must be a uint8 (H, W, C) array with C in (1, 3), got "
                                 f"{type(image).__name__} {getattr(image, 'dtype', '')} {shape}; use to_uint8()")
        if self.input.shape != self.synthesis.shape:
            raise ValueError(f"GalleryItem input {self.input.shape} and synthesis {self.synthesis.shape} differ in "
                             "shape")

    def caption(self) -> str:
        """``"id 12 · score 0.8311"``, plus label and prediction when known."""
        extra = [f"{name} {value}" for name, value in (("label", self.label), ("pred", self.prediction))
                 if value is not None]
        return "\n".join([f"id {self.id} · score {self.score:.4g}", *([" · ".join(extra)] if extra else [])])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images float (B, C, H, W) in [-1, 1], C = 1 or 3 -> uint8 (B, H, W, C) in [0, 255].

    Values outside [-1, 1] are clamped; the map is round((x + 1) * 127.5). Raises ``ValueError`` on NaN.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3) \
            or not images.is_floating_point():
        shape = tuple(getattr(images, "shape", ()))
        raise ValueError("to_uint8 expects a float tensor (B, C, H, W) in [-1, 1] with C = 1 or 3, got "
                         f"{type(images).__name__} {getattr(images, 'dtype', '')} {shape}")
    x = images.detach().to("cpu", torch.float32)
    if torch.isnan(x).any():
        raise ValueError(f"to_uint8: {int(torch.isnan(x).sum())} NaN values in the images; fix the synthesis first")
    x = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def pick_extremes(table: ScoreTable, method: str, set_name: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the ``k`` most and ``k`` least OOD-looking samples of ``set_name`` by ``method``'s score.

    Rows with a NaN score are ignored. Ties are broken by ascending id in both lists. When the set has fewer than
    ``2 k`` scored rows the two lists overlap; with fewer than ``k`` each list has them all.

    Returns:
        (most_ids, least_ids): int64 arrays, most OOD first and least OOD first respectively.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"pick_extremes: k must be an int >= 0, got {k!r}")
    if method not in table.scores:
        raise KeyError(f"no scores for method {method!r}; methods in this table: {table.methods}")
    rows = table.rows_of(set_name)
    scores, ids = table.scores[method][rows], table.ids[rows]
    keep = ~np.isnan(scores)
    scores, ids = scores[keep], ids[keep]
    most = ids[np.lexsort((ids, -scores))][:k]
    least = ids[np.lexsort((ids, scores))][:k]
    return most.astype(np.int64), least.astype(np.int64)


def _pair(item: GalleryItem) -> np.ndarray:
    """Input | 2-pixel gap | synthesis, upscaled (nearest) by an integer factor; uint8 (H', W', 3)."""
    a, b = item.input, item.synthesis
    if a.shape[2] == 1:
        a, b = np.repeat(a, 3, axis=2), np.repeat(b, 3, axis=2)
    gap = np.full((a.shape[0], 2, 3), 255, dtype=np.uint8)
    pair = np.concatenate([a, gap, b], axis=1)
    factor = max(1, math.ceil(_MIN_SIDE / a.shape[0]))
    return np.repeat(np.repeat(pair, factor, axis=0), factor, axis=1)


def gallery_figure(items: list[GalleryItem], title: str) -> bytes:
    """A grid of (input | synthesis) pairs, :data:`PAIRS_PER_ROW` per row, captioned with id and score.

    Small images (e.g. 28x28) are upscaled with nearest-neighbour so pixels stay sharp and visible.

    Returns:
        PNG bytes. Raises ``ValueError`` when ``items`` is empty.
    """
    if not items:
        raise ValueError(f"gallery_figure({title!r}): no items to show")
    cols = min(PAIRS_PER_ROW, len(items))
    rows = math.ceil(len(items) / cols)
    fig = Figure(figsize=(2.6 * cols, 1.75 * rows + 0.5))
    fig.suptitle(f"{title}\n(left: input, right: synthesis)", fontsize="medium")
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i < len(items):
            ax.imshow(_pair(items[i]), interpolation="nearest")
            ax.set_title(f"{items[i].set}\n{items[i].caption()}", fontsize="x-small")
    fig.tight_layout()
    return figure_png(fig)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def safe_name(text: str) -> str:
    """``text`` reduced to a file-name-safe slug (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def save_gallery(items: list[GalleryItem], folder: str | os.PathLike[str]) -> list[Path]:
    """Write each item's input and synthesis as PNGs at native resolution, plus ``index.csv``, into ``folder``.

    Files are ``<rank>-<set>-id<id>-input.png`` and ``...-synthesis.png`` (rank = position in ``items``).
    ``index.csv`` has columns rank, set, id, score, label, prediction, input, synthesis.

    Returns:
        The written paths: the image files in item order, then ``index.csv``.
    """
    folder = Path(folder)
    paths: list[Path] = []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "set", "id", "score", "label", "prediction", "input", "synthesis"])
    for rank, item in enumerate(items):
        stem = f"{rank:03d}-{safe_name(item.set)}-id{item.id}"
        pair = [atomic_write_bytes(folder / f"{stem}-{kind}.png", _png(image))
                for kind, image in (("input", item.input), ("synthesis", item.synthesis))]
        paths += pair
        writer.writerow([rank, item.set, item.id, repr(float(item.score)),
                         "" if item.label is None else item.label,
                         "" if item.prediction is None else item.prediction, pair[0].name, pair[1].name])
    paths.append(atomic_write_text(folder / "index.csv", buffer.getvalue()))
    return paths
