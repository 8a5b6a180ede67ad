"""Image sources for benchmarks: in-memory tensors (fmnist6) and OpenOOD image lists read from local files.

An image list has one sample per line, ``<relative/path> <label>``, split on the first space; OOD lists carry
label -1 (OpenOOD's format, see docs/benchmarks.md). Paths are relative to a data directory.
Every source yields float32 images (B, C, H, W) in [-1, 1] at the benchmark's resolution, int64 labels (-1 = OOD)
and stable int64 ids (the position in the list, or the index in the source data set).
"""

from __future__ import annotations

from diffguard.errors import UserError

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor


class DataError(UserError):
    """A data file or list is missing, empty or malformed; the message says what to do."""


class ImageSource(Protocol):
    """A set of images addressed by row index 0..N-1."""

    name: str
    labels: Tensor  # (N,) int64, -1 for OOD
    ids: Tensor  # (N,) int64, stable across runs

    def __len__(self) -> int: ...

    def load(self, rows: Sequence[int]) -> Tensor:
        """Images of the given rows, float32 (B, C, H, W) in [-1, 1]."""
        ...


@dataclass
class TensorSource:
    """Images already in memory: images (N, C, H, W) in [-1, 1]."""

    name: str
    images: Tensor
    labels: Tensor
    ids: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load(self, rows: Sequence[int]) -> Tensor:
        return self.images[torch.as_tensor(list(rows), dtype=torch.long)]

    def subset(self, rows: Sequence[int]) -> "TensorSource":
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        return TensorSource(self.name, self.images[idx], self.labels[idx], self.ids[idx])


def read_image_list(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """Parse an OpenOOD image list into (relative path, label) pairs; blank lines are ignored.

    Raises:
        DataError: missing file, an empty list, a line without a label, a non-integer label or an absolute path.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image list {path} does not exist; check --data-root (it must contain the OpenOOD "
                        "'benchmark_imglist' folder) or point the benchmark config at your list")
    items: list[tuple[str, int]] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        rel, _, extra = line.partition(" ")
        try:
            label = int(extra.strip())
        except ValueError:
            raise DataError(f"{path}:{n}: expected '<relative/path> <integer label>', got {line!r}") from None
        if rel.startswith("/"):
            raise DataError(f"{path}:{n}: paths must be relative to the data directory, got {rel!r}")
        items.append((rel, label))
    if not items:
        raise DataError(f"image list {path} is empty")
    return items


def _to_8bit(im: Any) -> Any:
    """16-bit and 32-bit integer / float grayscale images scaled to 8 bits by their type's range (PIL's own
    ``convert("L")`` would clip 16-bit values at 255). 8-bit modes are returned unchanged."""
    from PIL import Image

    if im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float64) / 65535.0
    elif im.mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        arr = arr / 65535.0 if arr.max(initial=0) > 255 else arr / 255.0
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
            raise DataError(f"float image with values in [{arr.min():.3g}, {arr.max():.3g}]: expected [0, 1]")
    else:
        return im
    return Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8), mode="L")


def load_image(path: Path, size: int, channels: int) -> Tensor:
    """Read one image file -> float32 (C, size, size) in [-1, 1] (resize the short side, then centre crop).

    Conversions (as OpenOOD's loader): any colour mode to RGB (alpha dropped) or to grayscale; 16-bit images are
    scaled by 65535 (not clipped); other sizes are resized bilinearly on the short side and centre-cropped.

    Raises:
        DataError: a missing, truncated or unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = _to_8bit(im).convert("RGB" if channels == 3 else "L")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist; check --data-root and the image list") from None
    except DataError as err:
        raise DataError(f"cannot use image {path}: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}; the file is corrupt or not an image") from None
    t = torch.from_numpy(arr).reshape(size, size, channels).permute(2, 0, 1)
    return t / 127.5 - 1.0


class ImageListSource:
    """Images named by an OpenOOD image list, read lazily.

    Args:
        name: set name.
        list_path: the image list.
        data_dir: folder the list's paths are relative to.
        size: output resolution (square).
        channels: 1 (grayscale) or 3 (RGB).
        ood: force every label to -1 (OpenOOD does the same for OOD sets).
        num_classes: when given, ID labels must lie in [0, num_classes).
    """

    def __init__(self, name: str, list_path: str | os.PathLike[str], data_dir: str | os.PathLike[str], size: int,
                 channels: int = 3, ood: bool = False, num_classes: int | None = None):
        self.name, self.data_dir, self.size, self.channels = name, Path(data_dir), size, channels
        items = read_image_list(list_path)
        labels = np.array([-1 if ood else lab for _, lab in items], dtype=np.int64)
        if num_classes is not None and not ood:
            bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
            if len(bad):
                raise DataError(f"{list_path}: {len(bad)} label(s) outside [0, {num_classes}), first at line "
                                f"{bad[0] + 1}: {labels[bad[0]]}")
        self.paths = [rel for rel, _ in items]
        self.labels = torch.from_numpy(labels)
        self.ids = torch.arange(len(items), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, rows: Sequence[int]) -> Tensor:
        return torch.stack([load_image(self.data_dir / self.paths[r], self.size, self.channels) for r in rows])
