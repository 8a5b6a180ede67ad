"""The DiffGuard detector (Gao et al., ICCV 2023, Sec. 3): invert, re-synthesise guided by the predicted label, compare.

Data flow per batch of images x (B, C, H, W) in [-1, 1]:

1. labels y: the classifier's prediction, an explicit override, or oracle labels (ground truth for ID rows,
   random labels from a generator for OOD rows, as the authors' oracle experiments);
2. z_k = DDIM inversion of backend.encode(x) with the null label, each sample up to its early-stop level k;
3. synthesis = backend.decode(DDIM sampling from z_k, level k + start_offset, guided towards y);
4. score = distance(reference, synthesis), reference = the input, or an unguided reconstruction from the same latent
   (the authors' main GDM setting), computed in the same batch.

Higher score = more OOD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from diffguard.detectors.detector import DetectorBase, Needs, Scored
from diffguard.diffusion.chunks import fixed_chunks
from diffguard.diffusion.ddim import ddim_invert, ddim_sample
from diffguard.diffusion.inversion import Inversion
from diffguard.distances import create_distance
from diffguard.distances.combined import check_scales, combined_score, score_names
from diffguard.errors import ConfigError
from diffguard.guidance.clean_grad import ClassifierGuidance
from diffguard.guidance.dsg import CFGGuidance
from diffguard.seeding import sample_generator

Reference = Literal["input", "unguided"]
LabelMode = Literal["predicted", "oracle"]
UNGUIDED = -1


@dataclass
class DiffGuardResult:
    """Everything one call computed. Images are (B, C, H, W) in [-1, 1]; per-sample values are (B,)."""

    score: Tensor
    distances: dict[str, Tensor]
    synthesis: Tensor
    reference: Tensor
    unguided: Tensor | None
    labels: Tensor
    predicted: Tensor
    logits: Tensor
    stop_level: Tensor
    start_level: Tensor


def check_images(x: Tensor, tol: float = 1e-4) -> None:
    """Raise a clear ValueError unless x is a finite float (B, C, H, W) batch in [-1, 1]."""
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float tensor (B, C, H, W), got {getattr(x, 'shape', type(x))}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or infinite values; clean or drop them before scoring")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - tol or hi > 1 + tol:
        raise ValueError(f"images must lie in [-1, 1] (got [{lo:.3g}, {hi:.3g}]); map [0, 1] images with x * 2 - 1")


@dataclass(repr=False)
class DiffGuard(DetectorBase):
    """DiffGuard OOD detector.

    Args:
        classifier: adapter with ``logits(x)`` on [-1, 1] images, ``cam_layer`` and ``num_classes``.
        backend: pixel or latent backend (``encode``, ``decode``, ``eps(z, t, y)``, ``alphas_cumprod``, ``null_label``).
        guidance: :class:`ClassifierGuidance` (Clean Grad) or :class:`CFGGuidance` (CFG, with DSG mask when
            ``cam_cut`` is set). Its ``row_chunk`` also applies to the label prediction and the inversion: the
            networks then see fixed-size row chunks, so a score does not depend on the batch-mates.
        inversion: grid, early stop and start convention (:class:`Inversion`).
        reference: "input" or "unguided" (an unguided reconstruction from the same latent).
        distances: names from ``diffguard.distances`` to compute; ``score_distance`` names the one used as the
            score (default: the first), or several joined by "+" (e.g. ``"gmsd+l2"``), scored as the sum of their
            robust z-scores with ``score_scales`` = {name: (median, scale)} measured on ID-val
            (:mod:`diffguard.distances.combined`; ``diffguard tune`` writes them).
        label_mode: "predicted" or "oracle" (needs ``y_true`` in :meth:`analyze`).
        seed: seeds the per-sample crop generators and the oracle's random OOD labels.
        distance_kwargs: constructor arguments per distance name (e.g. ``{"dists": {"weights": path}}``).
    """

    classifier: torch.nn.Module
    backend: object
    guidance: ClassifierGuidance | CFGGuidance
    inversion: Inversion = field(default_factory=Inversion)
    reference: Reference = "input"
    distances: Sequence[str] = ("l2",)
    score_distance: str | None = None
    score_scales: dict[str, tuple[float, float]] | None = None
    label_mode: LabelMode = "predicted"
    seed: int = 0
    distance_kwargs: dict[str, dict] = field(default_factory=dict)

    name: ClassVar[str] = "diffguard"
    display_name: ClassVar[str] = "DiffGuard"
    needs: ClassVar[Needs] = Needs(images=True, backend=True, randomness=True, labels=True)

    def __post_init__(self) -> None:
        if self.reference not in ("input", "unguided"):
            raise ConfigError(f"reference must be 'input' or 'unguided', got {self.reference!r}")
        if self.label_mode not in ("predicted", "oracle"):
            raise ConfigError(f"label_mode must be 'predicted' or 'oracle', got {self.label_mode!r}")
        self.score_distance = self.score_distance or self.distances[0]
        try:
            self._score_names = score_names(self.score_distance)
            self._scales = check_scales(self._score_names, self.score_scales)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        missing = [n for n in self._score_names if n not in self.distances]
        if missing:
            raise ConfigError(f"score_distance {self.score_distance!r} uses {missing}, not among the distances "
                              f"{list(self.distances)}: add them to distances")
        self._dist = {n: create_distance(n, **self._distance_args(n)) for n in self.distances}
        self.levels = self.inversion.levels(self.backend.alphas_cumprod)

    def _distance_args(self, name: str) -> dict:
        args = dict(self.distance_kwargs.get(name, {}))
        if name.startswith("logits"):
            args.setdefault("classifier", self.classifier)
        return args

    def params(self) -> dict[str, object]:
        """The configuration (everything but the models), for reports and manifests."""
        return {"guidance": self.guidance, "inversion": self.inversion, "reference": self.reference,
                "distances": tuple(self.distances), "score_distance": self.score_distance,
                **({"score_scales": self._scales} if self._scales else {}), "label_mode": self.label_mode,
                "seed": self.seed}

    def predict(self, x: Tensor, **kwargs: object) -> Tensor:
        """OOD scores (B,), higher = more OOD. x: (B, C, H, W) in [-1, 1]. kwargs go to :meth:`analyze`."""
        return self.analyze(x, **kwargs).score

    __call__ = predict

    def score_images(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None) -> Tensor:
        """(B,) OOD scores of images x (B, C, H, W) in [-1, 1] (the contract's name for :meth:`predict`)."""
        return self.analyze(x, y_true=y_true, ids=ids).score

    def details(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None,
                labels: Tensor | None = None) -> Scored:
        """The score, every distance (``dist:<name>``), the guided label and the stop / start levels per sample,
        and the syntheses (``labels``: explicit labels to guide towards, as in :meth:`analyze`)."""
        r = self.analyze(x, y_true=y_true, labels=labels, ids=ids)
        cols = {**{f"dist:{k}": v for k, v in r.distances.items()}, "label": r.labels, "stop": r.stop_level,
                "start": r.start_level}
        return Scored(r.score, cols, r.synthesis)

    def choose_labels(self, logits: Tensor, labels: Tensor | None, y_true: Tensor | None,
                      generator: torch.Generator) -> Tensor:
        """Labels to guide towards: explicit ``labels``, oracle labels, or the prediction."""
        if labels is not None:
            return labels.to(logits.device).long()
        if self.label_mode == "predicted":
            return logits.argmax(1)
        if y_true is None:
            raise ValueError("label_mode='oracle' needs y_true (ground truth, -1 for OOD rows)")
        y_true = y_true.to(logits.device).long()
        rand = torch.randint(0, logits.shape[1], y_true.shape, generator=generator).to(logits.device)
        return torch.where(y_true >= 0, y_true, rand)

    def guided_labels(self, x: Tensor, y_true: Tensor | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
        """(B,) the labels :meth:`analyze` guides the batch x (B, C, H, W) towards, without synthesising: the
        prediction, or in oracle mode the ground truth of ID rows and random labels for OOD rows (drawn for the
        whole batch, so a row's random label depends on its batch, as in :meth:`analyze`)."""
        return self._logits_and_labels(x, y_true, None, generator)[1]

    def _logits_and_labels(self, x: Tensor, y_true: Tensor | None, labels: Tensor | None,
                           generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """(logits (B, K), labels to guide towards (B,)) of checked images x (B, C, H, W)."""
        check_images(x)
        gen = generator or torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            logits = fixed_chunks(self.classifier.logits, self.guidance.row_chunk)(x)
        return logits, self.choose_labels(logits, labels, y_true, gen)

    def generators(self, ids: Tensor) -> list[torch.Generator]:
        """Per-sample crop generators: every sample replays one sequence (authors) or its own (seed, id) one."""
        shared = getattr(self.guidance, "shared_crops", True)
        return [torch.Generator().manual_seed(self.seed) if shared else sample_generator(self.seed, int(i)) for i in ids]

    def analyze(self, x: Tensor, y_true: Tensor | None = None, labels: Tensor | None = None,
                ids: Tensor | None = None, with_unguided: bool = False,
                generator: torch.Generator | None = None) -> DiffGuardResult:
        """Score a batch and return every intermediate (see :class:`DiffGuardResult`).

        Args:
            x: (B, C, H, W) images in [-1, 1].
            y_true: (B,) ground truth with -1 for OOD rows (oracle mode only).
            labels: (B,) explicit labels to guide towards (overrides prediction and oracle).
            ids: (B,) stable sample ids for per-sample generators (default 0..B-1).
            with_unguided: also return the unguided reconstruction when the reference is the input.
            generator: for the oracle's random OOD labels (default: seeded with ``seed``).
        """
        logits, y = self._logits_and_labels(x, y_true, labels, generator)
        z, stop = self._invert(x)
        start = (stop + self.inversion.start_offset).clamp_max(len(self.levels) - 1)
        both = with_unguided or self.reference == "unguided"
        ids = torch.arange(x.shape[0]) if ids is None else ids
        out = self._synthesise(x, z, y, start, ids, both, logits.argmax(1))
        if out.shape[-2:] != x.shape[-2:]:  # a backend working at another resolution (PixelBackend.resolution)
            out = F.interpolate(out, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False, antialias=False)
        synth, unguided = out[: x.shape[0]], out[x.shape[0]:] if both else None
        ref = unguided if self.reference == "unguided" else x
        with torch.no_grad():
            dists = {n: d(ref, synth) for n, d in self._dist.items()}
        score = combined_score(dists, self._score_names, self._scales)
        return DiffGuardResult(score, dists, synth, ref, unguided, y, logits.argmax(1), logits,
                               stop, start)

    def _invert(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            z0 = self.backend.encode(x)
            eps = self.inversion.eps_fn(self.backend, self.guidance.row_chunk)
            return ddim_invert(eps, z0, self.levels, self.inversion.first, self.inversion.cap,
                               self.inversion.variant, self.inversion.stop)

    def _synthesise(self, x: Tensor, z: Tensor, y: Tensor, start: Tensor, ids: Tensor, both: bool,
                    predicted: Tensor) -> Tensor:
        """Guided (and, with ``both``, unguided) DDIM sampling in one batch; returns decoded images."""
        if both:
            x, z, start, ids, predicted = (torch.cat([v, v]) for v in (x, z, start, ids, predicted))
            y = torch.cat([y, torch.full_like(y, UNGUIDED)])
        eps = self.guidance.build(self.backend, self.classifier, x, y, self.generators(ids), tuple(z.shape[-2:]),
                                  predicted=predicted)
        with torch.no_grad():  # guidance enables autograd itself where it needs a gradient
            return self.backend.decode(ddim_sample(eps, z, self.levels, start))
