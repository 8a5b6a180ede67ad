"""How images are inverted and where denoising starts: :class:`Inversion`, the DDIM-grid part of a DiffGuard
configuration, and :func:`null_eps`, a backend's unconditional eps function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from diffguard.diffusion.chunks import fixed_chunks
from diffguard.diffusion.ddim import EpsFn, InversionVariant, Levels, StopRule
from diffguard.diffusion.respace import even_levels, uniform_levels
from diffguard.diffusion.x0 import clipped_eps


def null_eps(backend: object, row_chunk: int | None = None) -> EpsFn:
    """The backend's unconditional eps (null label, or no label for an unconditional model); with ``row_chunk``
    the network sees chunks of exactly that many rows (:func:`~diffguard.diffusion.chunks.fixed_chunks`)."""
    eps = fixed_chunks(lambda z, t, y: backend.eps(z, t, y), row_chunk)

    def eps_fn(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        return eps(x, t, None)

    return eps_fn



@dataclass(frozen=True)
class Inversion:
    """How images are inverted and where denoising starts.

    Args:
        steps: number of DDIM timesteps N of the grid.
        spacing: "even" (guided-diffusion "ddimN", with a clean level 0) or "uniform" (latent-diffusion).
        first: level the input sits at (0; 1 = guided-diffusion's convention of placing the image at t = 0).
        cap: highest level inversion may reach (None: the top of the grid).
        variant: "current" (eps at the current level, Eq. 6) or "shifted" (latent-diffusion code).
        stop: per-sample Adaptive Early-Stop rule (``diffguard.diffusion.early_stop``), or None.
        start_offset: 0 = denoise from the level the latent is at (exact); 1 = one level noisier (authors).
        clip_x0: clamp x0_hat to [-1, 1] during inversion for t > 0 (guided-diffusion code).
    """

    steps: int = 50
    spacing: Literal["even", "uniform"] = "even"
    first: int = 0
    cap: int | None = None
    variant: InversionVariant = "current"
    stop: StopRule | None = None
    start_offset: int = 0
    clip_x0: bool = False

    def __post_init__(self) -> None:
        if self.spacing not in ("even", "uniform"):
            raise ValueError(f"spacing must be 'even' or 'uniform', got {self.spacing!r}")
        if self.variant not in ("current", "shifted"):
            raise ValueError(f"variant must be 'current' or 'shifted', got {self.variant!r}")
        if self.start_offset not in (0, 1):
            raise ValueError(f"start_offset must be 0 (exact) or 1 (authors), got {self.start_offset!r}")

    def levels(self, alphas_cumprod: Tensor) -> Levels:
        make = even_levels if self.spacing == "even" else uniform_levels
        return make(alphas_cumprod, self.steps)

    def eps_fn(self, backend: object, row_chunk: int | None = None) -> EpsFn:
        """The inversion's eps function; ``row_chunk``: network calls on fixed-size chunks (batch invariance)."""
        base = null_eps(backend, row_chunk)
        return clipped_eps(base, backend.alphas_cumprod) if self.clip_x0 else base
