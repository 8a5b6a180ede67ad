"""Image files and encoded images turned into the guard's input: (N, C, H, W) float32 in [-1, 1].

Files are read as the benchmarks read them (:func:`~diffguard.bench.image_sources.load_image`: any colour mode to
the guard's channels, short side resized bilinearly, centre crop). A file whose size differs from the guard's is
*reported* as resized (its original width x height), never silently changed; an unreadable file is skipped with
its reason, and nothing else is lost.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from diffguard.bench.image_sources import DataError, load_image
from diffguard.errors import UserError
from diffguard.guard.parts import Geometry

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class FileBatch:
    """What could be read of a list of files: ``ok`` (indices into the list), ``images`` (len(ok), C, H, W),
    ``skipped`` (index -> reason) and ``resized`` (index -> "WxH" of the original, for files of another size)."""

    ok: list[int] = field(default_factory=list)
    images: Tensor | None = None
    skipped: dict[int, str] = field(default_factory=dict)
    resized: dict[int, str] = field(default_factory=dict)


def original_size(source: Path | io.BytesIO) -> tuple[int, int]:
    """(width, height) of an image file, read from its header."""
    with Image.open(source) as im:
        return im.size


def read_files(files: list[Path], geometry: Geometry) -> FileBatch:
    """Read every file that can be read (see the module docstring)."""
    out = FileBatch()
    images = []
    for i, f in enumerate(files):
        if Path(f).suffix.lower() not in IMAGE_SUFFIXES:
            out.skipped[i] = f"not an image file (suffix {Path(f).suffix or 'none'})"
            continue
        try:
            images.append(load_image(Path(f), geometry.size, geometry.channels))
            w, h = original_size(Path(f))
        except DataError as err:
            out.skipped[i] = str(err)
            continue
        out.ok.append(i)
        if (w, h) != (geometry.size, geometry.size):
            out.resized[i] = f"{w}x{h}"
    out.images = torch.stack(images) if images else torch.empty(0, geometry.channels, geometry.size, geometry.size)
    return out


def decode_images(blobs: list[bytes], geometry: Geometry) -> Tensor:
    """Encoded image files (PNG, JPEG, ...) -> (N, C, H, W) in [-1, 1]; UserError names the first bad item."""
    images = []
    for i, blob in enumerate(blobs):
        try:
            original_size(io.BytesIO(blob))
            images.append(load_image(io.BytesIO(blob), geometry.size, geometry.channels))  # type: ignore[arg-type]
        except (DataError, UnidentifiedImageError, OSError) as err:
            raise UserError(f"item {i} is not a readable image file ({err})") from None
    return torch.stack(images) if images else torch.empty(0, geometry.channels, geometry.size, geometry.size)
