from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffguard.data.fashion_mnist import DEBIAN_ROOT
from diffguard.data import fmnist6
from diffguard.data.fmnist6 import SET_NAMES, VAL_PER_CLASS, load_fmnist6


def _check_definition(sets, n_train_known: int, n_test_known: int, n_test_unknown: int) -> None:
    train, val, test, near = sets["train"], sets["val"], sets["test"], sets["near-fmnist"]
    assert set(train.labels.tolist()) == set(range(6)) and set(val.labels.tolist()) == set(range(6))
    assert set(test.labels.tolist()) == set(range(6))
    assert torch.bincount(val.labels).tolist() == [VAL_PER_CLASS] * 6
    assert len(train) + len(val) == n_train_known
    assert len(test) == n_test_known and len(near) == n_test_unknown
    assert not set(train.ids.tolist()) & set(val.ids.tolist()), "train and val overlap"
    for s in sets.values():
        assert s.images.dtype == torch.float32 and s.images.shape[1:] == (1, 28, 28)
        assert s.images.min() >= -1 and s.images.max() <= 1
        assert len(s.ids.unique()) == len(s)
        if s.role in ("near", "far"):
            assert (s.labels == -1).all()
    assert len(sets["far-digits"]) == 1797
    assert len(sets["far-gaussian"]) == len(sets["far-uniform"]) == fmnist6.NOISE_COUNT


def test_definition_on_fake_data(fake_fmnist_root):
    sets = load_fmnist6(SET_NAMES, fake_fmnist_root)
    _check_definition(sets, 36000, 6000, 4000)


@pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_definition_on_real_data():
    sets = load_fmnist6(SET_NAMES)
    _check_definition(sets, 36000, 6000, 4000)
    # the known/unknown class split follows the real labels: near-OOD ids are test images of classes 6-9
    from diffguard.data.fashion_mnist import load_fashion_mnist

    te = load_fashion_mnist("test")
    assert set(te.labels[sets["near-fmnist"].ids.numpy()].tolist()) == {6, 7, 8, 9}
    # no test image appears (pixel-identical) in both the ID test set and the training split
    train_hashes = {hash(x.numpy().tobytes()) for x in sets["train"].images}
    overlap = sum(hash(x.numpy().tobytes()) in train_hashes for x in sets["test"].images)
    assert overlap < 0.01 * len(sets["test"])


def test_split_is_fixed_and_seeded(fake_fmnist_root):
    a = load_fmnist6(("val",), fake_fmnist_root)["val"]
    b = load_fmnist6(("val",), fake_fmnist_root)["val"]
    assert torch.equal(a.ids, b.ids)


def test_noise_sets_are_reproducible_and_distinct():
    g1, g2 = fmnist6.noise_set("far-gaussian"), fmnist6.noise_set("far-gaussian")
    u = fmnist6.noise_set("far-uniform")
    assert torch.equal(g1.images, g2.images)
    assert abs(float(u.images.mean())) < 0.01 and float(u.images.std()) > 0.5
    assert abs(float(g1.images.std()) - 0.47) < 0.03  # N(0, 0.5^2) clipped to [-1, 1]


def test_digits_resized_to_model_resolution():
    d = fmnist6.digits_set()
    assert d.images.shape == (1797, 1, 28, 28)
    assert float(d.images.min()) == -1.0 and float(d.images.max()) > 0.9  # 0..16 ink mapped onto [-1, 1]
    assert float((d.images == -1).float().mean()) > 0.2  # dark background, like Fashion-MNIST


def test_unknown_set_name(fake_fmnist_root):
    with pytest.raises(ValueError, match="unknown fmnist6 set"):
        load_fmnist6(("train", "imagenet"), fake_fmnist_root)
