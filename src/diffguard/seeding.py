"""The one home of derived seeds: a generator per sample (its draws do not depend on its batch-mates) and per
training step (a resumed run continues exactly as an uninterrupted one)."""

from __future__ import annotations

import torch


def sample_generator(seed: int, sample_id: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from (seed, sample id) only, so a sample's draws do not depend on its batch."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(sample_id) * 0xBF58476D1CE4E5B9) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(mixed)


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator private to one training step (or epoch), the same on every rerun."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
