"""Reader for the IDX file format used by MNIST and Fashion-MNIST.

An IDX file is a big-endian header followed by raw data:

* bytes 0-1: zero; byte 2: element type (0x08 = unsigned byte); byte 3: number of dimensions ``n``;
* ``n`` big-endian uint32 sizes;
* ``prod(sizes)`` elements.

Files may be gzip-compressed (``*.gz``). Every check failure raises :class:`IdxError` with the file name and what
to do, never a bare ``struct.error`` or a silently shortened array.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from diffguard.errors import UserError

_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(UserError):
    """A missing, truncated or corrupt IDX file."""


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise IdxError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise IdxError(f"{path}: corrupt or truncated gzip stream ({err}); re-install or re-download the file") from err


def read_idx(path: str | os.PathLike[str], expect_ndim: int | None = None) -> np.ndarray:
    """Read one unsigned-byte IDX file (raw or gzipped).

    Args:
        path: the file.
        expect_ndim: when given, the number of dimensions the header must announce (3 for images, 1 for labels).

    Returns:
        A ``uint8`` array with the header's shape, e.g. (N, 28, 28) for images or (N,) for labels.

    Raises:
        IdxError: missing file, bad magic number, wrong dimensionality, or fewer/more data bytes than announced.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = data[2], data[3]
    if dtype != _UBYTE:
        raise IdxError(f"{path}: element type 0x{dtype:02x} is not supported (only unsigned byte, 0x08)")
    if expect_ndim is not None and ndim != expect_ndim:
        raise IdxError(f"{path}: header announces {ndim} dimensions, expected {expect_ndim}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n_items = int(np.prod(shape)) if shape else 0
    body = len(data) - header_len
    if body != n_items:
        what = "truncated" if body < n_items else "has trailing bytes"
        raise IdxError(f"{path}: {what}: header announces shape {shape} ({n_items} bytes), file holds {body}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)
