"""benchmarks/unseen_shifts.py: its covariate shifts keep shape and range, are seeded per image, and do what they say."""

from __future__ import annotations

import pytest
import torch
from script_modules import load_script

us = load_script("benchmarks/unseen_shifts.py")
KEYS = list(us.SHIFTS)
RANDOM = [k for k in KEYS if us.SHIFTS[k].op in ("rotate", "gamma", "salt-pepper", "occlude")]


def images(n: int = 5, seed: int = 0) -> torch.Tensor:
    """(n, 1, 28, 28) in [-1, 1]: a bright, textured rectangle (the 'garment') on the -1 background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, 28, 28), -1.0)
    x[:, :, 5:23, 8:20] = torch.rand(n, 1, 18, 12, generator=g) * 1.6 - 0.6
    return x


@pytest.mark.parametrize("key", KEYS)
def test_shape_dtype_and_range_are_kept(key: str) -> None:
    for x in (images(), torch.rand(4, 1, 28, 28) * 2 - 1, torch.full((2, 1, 28, 28), 1.0)):
        out = us.shift_images(x, torch.arange(len(x)), key)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= -1.0 and out.max() <= 1.0 and torch.isfinite(out).all()


@pytest.mark.parametrize("key", KEYS)
def test_seeded_per_image(key: str) -> None:
    x, ids = images(6), torch.tensor([3, 9, 14, 20, 21, 40])
    whole = us.shift_images(x, ids, key, seed=1)
    assert torch.equal(whole, us.shift_images(x, ids, key, seed=1))
    assert torch.equal(whole[2:5], us.shift_images(x[2:5], ids[2:5], key, seed=1))  # not on the batch


@pytest.mark.parametrize("key", RANDOM)
def test_other_seed_other_draws(key: str) -> None:
    x, ids = images(8), torch.arange(8)
    assert not torch.equal(us.shift_images(x, ids, key, seed=0), us.shift_images(x, ids, key, seed=1))


def test_clean_is_identity_and_flip_is_a_mirror() -> None:
    x, ids = images(), torch.arange(5)
    assert torch.equal(us.shift_images(x, ids, "clean"), x)
    flipped = us.shift_images(x, ids, "flip")
    assert torch.equal(flipped, x.flip(-1)) and torch.equal(us.shift_images(flipped, ids, "flip"), x)


def test_warp_identity_and_background_fill() -> None:
    x = images(3)
    assert torch.allclose(us.warp(x, torch.zeros(3).numpy(), torch.ones(3).numpy()), x, atol=1e-5)
    blank = torch.full((2, 1, 28, 28), -1.0)
    for key in ("rotate-15", "zoom-0.8"):
        assert torch.equal(us.shift_images(blank, torch.arange(2), key), blank)  # no grey border comes in
    zoomed = us.shift_images(torch.ones(1, 1, 28, 28), torch.arange(1), "zoom-0.8")
    assert zoomed[0, 0, 0].max() == -1.0 and zoomed[0, 0, 14, 14] == 1.0  # smaller, background around it


def test_salt_pepper_and_occlusion_counts() -> None:
    x = torch.zeros(4, 1, 28, 28)
    for key, k in (("salt-pepper-1", 8), ("salt-pepper-3", 24)):
        out = us.shift_images(x, torch.arange(4), key)
        assert ((out != 0).flatten(1).sum(1) == k).all() and set(out[out != 0].tolist()) <= {-1.0, 1.0}
    for key, side in (("occlude-5", 5), ("occlude-8", 8)):
        out = us.shift_images(x, torch.arange(4), key)
        hit = out[:, 0] == -1.0
        assert (hit.flatten(1).sum(1) == side * side).all()
        rows, cols = hit.any(2), hit.any(1)
        m = us.OCCLUDE_MARGIN
        assert not rows[:, :m].any() and not rows[:, 28 - m:].any() and not cols[:, :m].any()


def test_pixelate_and_gamma() -> None:
    x = images()
    out = us.shift_images(x, torch.arange(5), "pixelate-2")
    blocks = out.unfold(2, 2, 2).unfold(3, 2, 2)
    assert torch.equal(blocks.amax((-1, -2)), blocks.amin((-1, -2)))
    assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), atol=1e-6)
    ends = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(3, 1, 1, 2)
    assert torch.allclose(us.shift_images(ends.contiguous(), torch.arange(3), "gamma"), ends)
    mid = us.shift_images(torch.zeros(40, 1, 1, 1), torch.arange(40), "gamma").flatten()
    want = {round(2 * 0.5 ** g - 1, 5) for g in (0.7, 1 / 0.7)}
    assert {round(v, 5) for v in mid.tolist()} == want  # both directions drawn
