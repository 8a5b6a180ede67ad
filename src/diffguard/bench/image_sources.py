"""Image sources for benchmarks: in-memory tensors (fmnist6), OpenOOD image lists and image folders.

An image list has one sample per line, ``<relative/path> <label>``, split on the first space; OOD lists carry
label -1 (OpenOOD's format, see docs/benchmarks.md). Paths are relative to a data directory.
An image folder holds one sub-folder per class (named like the class; the label is the class's index) or, for an
OOD set, any files and sub-folders (label -1); files are sorted by relative path so ids are stable.
Every source yields float32 images (B, C, H, W) in [-1, 1] at the benchmark's resolution, int64 labels (-1 = OOD)
and stable int64 ids (the position in the list or sorted folder, or the index in the source data set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from diffguard.errors import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

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


class _FileSource:
    """Images stored as files under ``data_dir`` (relative ``paths``), read lazily with :func:`load_image`."""

    def __init__(self, name: str, data_dir: Path, paths: list[str], labels: np.ndarray, size: int, channels: int):
        self.name, self.data_dir, self.size, self.channels = name, data_dir, size, channels
        self.paths = paths
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.ids = torch.arange(len(paths), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, rows: Sequence[int]) -> Tensor:
        """Images of the given rows, float32 (B, C, size, size) in [-1, 1]."""
        return torch.stack([load_image(self.data_dir / self.paths[r], self.size, self.channels) for r in rows])


class ImageListSource(_FileSource):
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
        items = read_image_list(list_path)
        labels = np.array([-1 if ood else lab for _, lab in items], dtype=np.int64)
        if num_classes is not None and not ood:
            bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
            if len(bad):
                raise DataError(f"{list_path}: {len(bad)} label(s) outside [0, {num_classes}), first at line "
                                f"{bad[0] + 1}: {labels[bad[0]]}")
        super().__init__(name, Path(data_dir), [rel for rel, _ in items], labels, size, channels)


def image_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the image files under ``folder`` (recursive, sorted; hidden and other files skipped)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_folder_labels(folder: Path, files: list[str], classes: Sequence[str], every_class: bool) -> np.ndarray:
    """Labels of ``files`` from their first path component, a class sub-folder (DataError when it is not one)."""
    index = {c: i for i, c in enumerate(classes)}
    loose = [f for f in files if "/" not in f]
    if loose:
        raise DataError(f"{folder}: image file {loose[0]!r} is not in a class sub-folder; an ID set's images go in "
                        f"one sub-folder per class ({', '.join(classes)})")
    subs = {f.split("/", 1)[0] for f in files} | {p.name for p in folder.iterdir() if p.is_dir()
                                                    and not p.name.startswith(".")}
    unknown = sorted(subs - set(index))
    if unknown:
        raise DataError(f"{folder}: sub-folder(s) {unknown} are not classes of the benchmark ({', '.join(classes)}); "
                        "rename them to a class name, or add the class to 'classes'")
    counts = {c: 0 for c in classes}
    for f in files:
        counts[f.split("/", 1)[0]] += 1
    empty = [c for c, n in counts.items() if n == 0]
    if every_class and empty:
        raise DataError(f"{folder}: no images for class(es) {empty}; add a sub-folder per class "
                        f"({folder / empty[0]}/...) holding that class's images")
    return np.array([index[f.split("/", 1)[0]] for f in files], dtype=np.int64)


class ImageFolderSource(_FileSource):
    """Images in a folder, read lazily; ids are positions in the sorted list of relative paths.

    Args:
        name: set name.
        folder: the set's folder.
        size: output resolution (square).
        channels: 1 (grayscale) or 3 (RGB).
        classes: class names of an ID set (images in ``folder/<class>/``, label = index in ``classes``); None for
            an OOD set (any files and sub-folders, label -1).
        every_class: an ID set must hold images of every class.

    Raises:
        DataError: a missing folder, no image files, or (ID sets) a sub-folder that is not a class, an image outside
            the class sub-folders, or (``every_class``) a class without images.
    """

    def __init__(self, name: str, folder: str | os.PathLike[str], size: int, channels: int = 3,
                 classes: Sequence[str] | None = None, every_class: bool = True):
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"image folder {folder} of set {name!r} does not exist; fix the set's 'folder' path")
        files = image_files(folder)
        if not files:
            raise DataError(f"image folder {folder} of set {name!r} holds no image files "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); put the set's images there")
        if classes is None:
            labels = np.full(len(files), -1, dtype=np.int64)
        else:
            labels = _class_folder_labels(folder, files, classes, every_class)
        super().__init__(name, folder, files, labels, size, channels)
