"""The optimised execution paths give the numbers of the plain formulas (float64, tiny models)."""

from __future__ import annotations

import math

import pytest
import torch

from diffguard.diffusion.rows import RowsMemo
from diffguard.distances.perceptual import DISTSDistance, write_dists_weights
from diffguard.distances.vgg import vgg16_feature_shapes
from diffguard.guidance.cfg import cfg_eps
from diffguard.guidance.dsg import masked_cfg_eps
from diffguard.diffusion.early_stop import CachedReferenceSimilarity

NULL = 5


class LabelNet:
    """A deterministic eps model with a label dependence; records the batch sizes it was called with."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return torch.tanh(x * 0.7 + 0.01 * t.view(-1, 1, 1, 1)) + 0.1 * y.view(-1, 1, 1, 1).to(x) * x.square()


def plain_cfg(net: LabelNet, x, t, y, scale, mask=None):
    """The unoptimised formula: [x; x] with labels [null; y] for every row."""
    e_u, e_c = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([torch.full_like(y, NULL), y])).chunk(2)
    guided = e_u + scale * (e_c - e_u)
    return guided if mask is None else guided.where(mask > 0.5, e_u)


@pytest.mark.parametrize("masked", [False, True])
def test_cfg_skips_the_conditional_call_for_unguided_rows(masked):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 4, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, NULL, NULL, NULL])  # three guided rows, three unguided ones
    mask = (torch.rand(6, 1, 4, 4, generator=g) > 0.5).double()
    net = LabelNet()
    fn = masked_cfg_eps(net, labels, NULL, 3.0, mask) if masked else cfg_eps(net, labels, NULL, 3.0)
    t = torch.full((6,), 400)
    for rows in (torch.arange(6), torch.tensor([1, 2, 4])):
        got = fn(x[rows], t[rows], rows)
        want = plain_cfg(LabelNet(), x[rows], t[rows], labels[rows], 3.0, mask[rows] if masked else None)
        assert torch.allclose(got, want, atol=1e-12)
    assert net.batches == [9, 5]  # B' + guided rows, not 2 B'
    all_guided = cfg_eps(net, torch.tensor([0, 1]), NULL, 2.0)(x[:2], t[:2], torch.arange(2))
    assert torch.allclose(all_guided, plain_cfg(LabelNet(), x[:2], t[:2], torch.tensor([0, 1]), 2.0), atol=1e-12)


def test_rows_memo_is_per_tensor_object():
    calls = []
    memo = RowsMemo(lambda r: calls.append(1) or int(r.sum()))
    a, b = torch.arange(3), torch.arange(3)
    assert memo(a) == memo(a) == memo(b) == 3
    assert len(calls) == 2  # a and b are different objects with equal content: each computed once


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in vgg16_feature_shapes().items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        state[key] = torch.randn(*shape, generator=g) * (math.sqrt(2 / fan_in) if len(shape) > 1 else 0.01)
    path = write_dists_weights(tmp_path_factory.mktemp("d") / "dists.safetensors", state,
                               torch.rand(1475, generator=g), torch.rand(1475, generator=g))
    return DISTSDistance(weights=path, clamp=False)


def test_cached_reference_similarity_matches_recomputation(dists):
    dists.net.double()
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(4, 1, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    sim = CachedReferenceSimilarity(dists)
    cached = None
    for rows in (torch.arange(4), torch.arange(4), torch.tensor([0, 2, 3]), torch.tensor([3])):
        x = ref[rows] + 0.3 * torch.randn(len(rows), 1, 16, 16, generator=g, dtype=torch.float64)
        assert torch.allclose(sim(x, ref[rows], rows), 1 - dists(x, ref[rows]), atol=1e-10)
        cached = sim._stats if cached is None else cached
        assert sim._stats is cached  # computed once, then reused for the shrinking active set
    other = -ref  # a new batch with the same row numbers must not reuse the old references
    x = other + 0.1
    assert torch.allclose(sim(x, other, torch.arange(4)), 1 - dists(x, other), atol=1e-10)
    assert sim._stats is not cached


def test_sampling_passes_one_rows_object_per_active_set():
    from diffguard.diffusion.ddim import ddim_sample
    from diffguard.diffusion.respace import even_levels

    acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    seen = []

    def eps(x, t, rows):
        seen.append(rows)
        return torch.zeros_like(x)

    ddim_sample(eps, torch.randn(3, 1, 2, 2), even_levels(acp, 6), start=torch.tensor([5, 3, 5]))
    assert [r.tolist() for r in seen] == [[0, 2], [0, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]]
    assert seen[0] is seen[1] and seen[2] is seen[3] is seen[4]  # guidance memoises host decisions per object
