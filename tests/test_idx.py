from __future__ import annotations

import gzip

import numpy as np
import pytest

from conftest import write_idx
from diffguard.data.fashion_mnist import DataNotFoundError, load_fashion_mnist
from diffguard.data.idx import IdxError, read_idx


@pytest.mark.parametrize("compress", [False, True])
def test_roundtrip(tmp_path, compress):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a.idx", arr, compress)
    out = read_idx(path, expect_ndim=3)
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)


def test_missing_file(tmp_path):
    with pytest.raises(IdxError, match="not found"):
        read_idx(tmp_path / "nope")


def test_bad_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(IdxError, match="magic"):
        read_idx(tmp_path / "x")


def test_unsupported_dtype(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00" * 4)
    with pytest.raises(IdxError, match="element type"):
        read_idx(tmp_path / "x")


def test_wrong_ndim(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((5,), np.uint8))
    with pytest.raises(IdxError, match="expected 3"):
        read_idx(path, expect_ndim=3)


def test_truncated_body(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IdxError, match="truncated"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4,), np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(IdxError, match="trailing"):
        read_idx(path)


def test_truncated_header(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(IdxError, match="header"):
        read_idx(tmp_path / "x")


def test_corrupt_gzip(tmp_path):
    blob = gzip.compress(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100))
    (tmp_path / "x.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IdxError, match="gzip"):
        read_idx(tmp_path / "x.gz")


def test_fashion_mnist_missing_folder_names_package_and_flag(tmp_path):
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist") as err:
        load_fashion_mnist("test", tmp_path)
    assert "--data-root" in str(err.value)


def test_fashion_mnist_wrong_count(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((10,), np.uint8))
    with pytest.raises(IdxError, match="expected"):
        load_fashion_mnist("test", tmp_path)


def test_fashion_mnist_env_var(fake_fmnist_root, monkeypatch):
    monkeypatch.setenv("DIFFGUARD_DATA_ROOT", str(fake_fmnist_root))
    split = load_fashion_mnist("test")
    assert split.images.shape == (10000, 28, 28) and split.labels.shape == (10000,)


def test_fashion_mnist_unknown_split(fake_fmnist_root):
    with pytest.raises(ValueError, match="unknown"):
        load_fashion_mnist("validation", fake_fmnist_root)
