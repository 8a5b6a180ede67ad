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
        if s.role in ("near", "far", "val_ood"):
            assert (s.labels == -1).all()
        assert s.role == fmnist6.ROLES[s.name]
    assert len(sets["far-digits"]) == 1797
    assert len(sets["far-gaussian"]) == len(sets["far-uniform"]) == fmnist6.NOISE_COUNT
    assert len(sets["val-ood"]) == 4 * fmnist6.VAL_OOD_PER_CLASS and len(sets["val-far"]) == fmnist6.VAL_FAR_COUNT
    # val-ood: training-split images of the unknown classes, so disjoint from train and val (same split, other
    # classes) and from test / near-fmnist (other split)
    assert not set(sets["val-ood"].ids.tolist()) & (set(train.ids.tolist()) | set(val.ids.tolist()))
    # csid copies: the clean set's ids and true labels, other pixels
    for clean, shifted, role in (("val", "val-csid", "val_csid"), ("test", "test-csid", "csid")):
        a, b = sets[clean], sets[shifted]
        assert torch.equal(a.ids, b.ids) and torch.equal(a.labels, b.labels)
        assert b.role == role == fmnist6.ROLES[shifted]  # val-csid is validation data by its role, test-csid test
        assert (a.images != b.images).flatten(1).any(1).float().mean() > 0.95


@pytest.fixture(scope="module")
def fake_sets(fake_fmnist_root):
    """Every fmnist6 set built from the fake Fashion-MNIST folder (built once: the csid sets take seconds)."""
    return load_fmnist6(SET_NAMES, fake_fmnist_root)


def test_definition_on_fake_data(fake_sets):
    _check_definition(fake_sets, 36000, 6000, 4000)


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


def test_new_sets_leave_train_and_val_unchanged(fake_fmnist_root, fake_sets):
    """The shipped models were trained on ``train``: asking for the validation sets must not move it."""
    alone = load_fmnist6(("train", "val"), fake_fmnist_root)
    every = fake_sets
    for name in ("train", "val"):
        assert torch.equal(alone[name].ids, every[name].ids)
    from diffguard.data.fashion_mnist import load_fashion_mnist

    labels = load_fashion_mnist("train", fake_fmnist_root).labels
    train_idx, val_idx = fmnist6.split_train_val(labels)
    assert torch.equal(every["train"].ids, torch.from_numpy(train_idx).long())


def test_val_ood_is_a_stratified_seeded_holdout_of_unknown_training_images(fake_fmnist_root, fake_sets):
    import numpy as np

    from diffguard.data.fashion_mnist import load_fashion_mnist

    tr = load_fashion_mnist("train", fake_fmnist_root)
    v = fake_sets["val-ood"]
    ids = v.ids.numpy()
    assert (v.labels == -1).all() and v.role == "val_ood" and (ids[1:] > ids[:-1]).all()
    source = tr.labels[ids]
    assert {int(c): int((source == c).sum()) for c in fmnist6.UNKNOWN_CLASSES} == {c: 500 for c in (6, 7, 8, 9)}
    assert torch.equal(v.images, fmnist6._to_unit(tr.images[ids]))
    assert torch.equal(v.ids, load_fmnist6(("val-ood",), fake_fmnist_root)["val-ood"].ids)
    # its own stream: not the images a draw on the val stream (seed 0, default stream) would take
    rng = np.random.default_rng(fmnist6.SPLIT_SEED)
    first = rng.choice(np.flatnonzero(tr.labels == 6), size=500, replace=False)
    assert set(first.tolist()) != set(ids[source == 6].tolist())


def test_val_ood_shares_no_image_with_the_test_sets(fake_sets):
    sets = fake_sets

    def hashes(name):
        return {x.numpy().tobytes() for x in sets[name].images}

    for val in ("val-ood", "val-far"):
        for test in ("test", "near-fmnist", "far-gaussian", "far-uniform"):
            assert not hashes(val) & hashes(test), (val, test)


def test_val_far_is_seeded_bounded_and_varied():
    a, b = fmnist6.val_far_set(30), fmnist6.val_far_set(30)
    assert torch.equal(a.images, b.images) and a.images.shape == (30, 1, 28, 28)
    assert a.role == "val_ood" and (a.labels == -1).all() and torch.equal(a.ids, torch.arange(30))
    assert float(a.images.min()) >= -1 and float(a.images.max()) <= 1
    assert float(a.images.flatten(1).std(1).min()) > 0.1  # no flat image
    assert len({x.numpy().tobytes() for x in a.images}) == 30


def test_csid_corruptions_are_seeded_per_id_bounded_and_mild(fake_fmnist_root, fake_sets):
    from diffguard.data.corruptions import CORRUPTIONS, corrupt

    clean, shifted = fake_sets["test"], fake_sets["test-csid"]
    again = load_fmnist6(("val-csid",), fake_fmnist_root)["val-csid"]  # val-csid alone, without val
    assert torch.equal(fake_sets["val-csid"].images, again.images)
    assert float(shifted.images.min()) >= -1 and float(shifted.images.max()) <= 1
    assert shifted.images.dtype == torch.float32 and shifted.images.shape == clean.images.shape
    # an image's corruption depends on (seed, id) only: a subset corrupted alone gives the same pixels
    sub, _ = corrupt(clean.images[5:9], clean.ids[5:9], fmnist6.CSID_SEEDS["test-csid"])
    assert torch.equal(sub, shifted.images[5:9])
    _, kinds = corrupt(clean.images[:500], clean.ids[:500], fmnist6.CSID_SEEDS["test-csid"])
    assert set(kinds) == set(CORRUPTIONS) and all(kinds.count(k) > 60 for k in CORRUPTIONS)
    # mild: the mean absolute change is a small part of the range
    assert float((shifted.images - clean.images).abs().mean()) < 0.15
    other = corrupt(clean.images[:50], clean.ids[:50], fmnist6.CSID_SEEDS["val-csid"])[0]
    assert not torch.equal(other, shifted.images[:50])  # each csid set has its own seed


def test_each_corruption_does_what_it_says():
    import numpy as np

    from diffguard.data import corruptions as c

    x = torch.full((1, 1, 28, 28), -1.0)
    x[..., 10:18, 8:20] = 1.0
    moved = c.apply(x, "shift", [(2, -1)])
    assert torch.equal(moved[..., 12:20, 7:19], x[..., 10:18, 8:20])
    assert float(moved[..., :2, :].max()) == float(moved[..., 27].max()) == -1.0  # background fills in
    blurred = c.apply(x, "blur", [0.6])
    assert abs(float(blurred.sum() - x.sum())) < 1e-3  # a normalised kernel keeps the mass (replicated border)
    assert -1.0 < float(blurred[0, 0, 9, 12]) < 0.0 < float(blurred[0, 0, 14, 14])  # edges soften, inside stays
    dim = c.apply(x, "contrast", [0.8])
    assert float(dim.min()) == -1.0 and float(dim.max()) == pytest.approx(0.6)  # ink x 0.8, background kept
    j = c.apply(x, "jpeg", [50])
    assert j.shape == x.shape and 0 < float((j - x).abs().mean()) < 0.1
    noisy = c.apply(x, "noise", [np.full((1, 28, 28), 0.05, dtype=np.float32)])
    assert torch.allclose(noisy - x, torch.full_like(x, 0.05))
    for sid in range(60):
        d = c.draw(np.random.default_rng([9, sid]), (1, 28, 28))
        assert d.kind in c.CORRUPTIONS
        y, kinds = c.corrupt(x, [sid], 9)
        assert kinds == [d.kind] and float(y.min()) >= -1 and float(y.max()) <= 1
        lo, hi = {"blur": c.BLUR_SIGMA, "contrast": c.CONTRAST, "jpeg": c.JPEG_QUALITY}.get(d.kind, (None, None))
        if lo is not None:
            assert lo <= d.param <= hi
        if d.kind == "noise":
            assert 0.02 < float(np.std(d.param)) < 0.09
        if d.kind == "shift":
            assert 1 <= max(abs(d.param[0]), abs(d.param[1])) <= 2


def test_gaussian_blur_matches_a_padded_convolution():
    import torch.nn.functional as F

    from diffguard.data.corruptions import gaussian_blur

    x = torch.randn(3, 2, 28, 28, dtype=torch.float64)
    for mode, radius, sigma in (("replicate", 3, 0.6), ("reflect", 8, 2.5)):
        t = torch.arange(-radius, radius + 1, dtype=x.dtype)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        y = F.pad(x, (radius,) * 4, mode=mode).reshape(6, 1, 28 + 2 * radius, 28 + 2 * radius)
        y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1)).reshape(3, 2, 28, 28)
        assert torch.allclose(gaussian_blur(x, sigma, radius, mode), y, atol=1e-12)
    sig = torch.tensor([0.5, 0.6, 0.7], dtype=x.dtype)  # one sigma per image = each image alone
    alone = torch.cat([gaussian_blur(x[i:i + 1], float(sig[i])) for i in range(3)])
    assert torch.allclose(gaussian_blur(x, sig), alone, atol=1e-12)


def test_csid_accuracy_of_the_shipped_classifier_on_real_data():
    """The numbers quoted in the fmnist6 docstring (the shipped classifier keeps most of its accuracy)."""
    pytest.importorskip("safetensors")
    if not Path(DEBIAN_ROOT).is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    from diffguard.model_files import load_classifier

    sets = load_fmnist6(("test", "test-csid"))
    model = load_classifier()
    acc = {}
    with torch.no_grad():
        for name, s in sets.items():
            idx = torch.arange(0, len(s), 6)  # every 6th image: 1000 per set keeps the test short
            acc[name] = float((model(s.images[idx]).argmax(1) == s.labels[idx]).float().mean())
    assert acc["test"] > 0.9 and acc["test"] - 0.05 < acc["test-csid"] < acc["test"]


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
