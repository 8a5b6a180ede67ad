""""DiffGuard + X": the band rule that lets a baseline keep its confident decisions and DiffGuard decide the rest.

The paper ("Ours + X" rows) only says that the baseline's confident decisions are trusted and DiffGuard handles
the hard cases; it gives no formula. This rule is **the project's own**:

1. ``fit`` on ID-validation scores only (no OOD data): the thresholds lo = quantile(b_val, ``low_q``) and
   hi = quantile(b_val, ``high_q``) of the baseline's OOD scores (numpy's default linear interpolation;
   ``low_q = 0`` means lo = -inf and ``high_q = 1`` means hi = +inf, i.e. that band is switched off), plus the
   median and inter-quartile range of the baseline's and of DiffGuard's ID-validation scores.
2. Each test sample gets a tier: 0 when b < lo (confidently ID), 2 when b > hi (confidently OOD), 1 otherwise
   (lo <= b <= hi, the hard case).
3. fused = tier + u, u in [0, 1): in tiers 0 and 2 u squashes the baseline score, in tier 1 the DiffGuard score,
   with u(s) = 1/2 + arctan((s - median) / IQR) / pi (robust standardisation on ID-val; an IQR of 0 falls back to
   the standard deviation, then to 1). u is strictly increasing, so within a tier the order is the baseline's
   (tiers 0, 2) or DiffGuard's (tier 1), and every confident-ID sample ranks below every hard case, which ranks
   below every confident-OOD sample. u is capped at 1 - 1e-12 so float64 rounding never merges two tiers (only
   standardised scores beyond ~3e11 would tie).

Special cases: low_q = 0 and high_q = 1 give DiffGuard's ranking; low_q = high_q gives the baseline's ranking
(samples exactly at the single threshold are ordered among themselves by DiffGuard).

A score-level rule sits beside it, :class:`WeightedSumFusion` (also the project's own): fused =
(1 - w) z_b + w z_d with z = (s - median) / IQR of each method's ID-validation scores (the same robust
standardisation). w = 0 gives the baseline's ranking, w = 1 DiffGuard's. Which rule, and its quantiles or weight,
is chosen on validation data by ``diffguard tune CONFIG --fusion DIFFGUARD+BASELINE``. Both rules share one
interface (``fit(baseline_val, diffguard_val)`` on ID-val scores only, ``fuse(baseline, diffguard)``, ``report()``)
and are registered by name in :data:`FUSION_RULES` (``band``, ``weighted``, ``veto``: the band rule with a DiffGuard
veto of the confident-OOD tier, :class:`VetoBandFusion`; ``veto-split``: the veto rule with the veto and the band's
ranking read from two different DiffGuard columns, e.g. GMSD vetoes and the logits distance ranks,
:class:`SplitVetoFusion`).

**DiffGuard's columns.** A DiffGuard method stores, besides its (possibly calibrated) ``score``, every distance it
computes as ``dist:<name>`` (raw, 0 for identical images, higher = more different, so more OOD). Each rule declares the
columns it reads (``diffguard_columns``: ``("score",)`` for band, weighted and veto); a rule with ``takes_columns``
(veto-split) takes DiffGuard's input to ``fit`` / ``fuse`` as a mapping column -> (N,) scores, the others the
``score`` array. Every caller builds that input with :func:`diffguard_input` from the method's columns.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from diffguard.distances import DISTANCES
from diffguard.errors import UserError
from diffguard.registry import Registry
from diffguard.score_arrays import as_scores

_U_MAX = 1.0 - 1e-12
SCORE = "score"  # DiffGuard's own (possibly calibrated) score column; a distance <name> is the column dist:<name>


def _array(x: Any, name: str) -> np.ndarray:
    return as_scores(x, name, empty="a fusion rule needs at least one score")


def _same_samples(b: np.ndarray, d: np.ndarray, name: str) -> None:
    if b.shape != d.shape:
        raise ValueError(f"baseline {b.shape} and {name} {d.shape} must score the same samples")


def _robust_scale(x: np.ndarray) -> tuple[float, float]:
    """(median, IQR) with IQR -> std -> 1 fallbacks when the spread is 0."""
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    scale = q3 - q1
    if not scale > 0:
        scale = float(np.std(x)) if np.std(x) > 0 else 1.0
    return float(med), float(scale)


def _squash(s: np.ndarray, center: float, scale: float) -> np.ndarray:
    """Strictly increasing map to (0, 1), capped below 1 (see the module docstring)."""
    return np.minimum(0.5 + np.arctan((s - center) / scale) / np.pi, _U_MAX)


@dataclass
class BandFusion:
    """Three-tier fusion of a baseline and DiffGuard (both OOD scores, higher = more OOD).

    Args:
        low_q: ID-val quantile of the baseline score below which a sample is confidently ID.
        high_q: ID-val quantile above which it is confidently OOD; 0 <= low_q <= high_q <= 1.
    """

    low_q: float = 0.5
    high_q: float = 0.99
    _state: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    takes_columns: ClassVar[bool] = False  # fit / fuse take DiffGuard's score array (see diffguard_input)

    def __post_init__(self) -> None:
        if not (0.0 <= self.low_q <= self.high_q <= 1.0):
            raise ValueError(f"need 0 <= low_q <= high_q <= 1, got low_q={self.low_q}, high_q={self.high_q}")

    @property
    def diffguard_columns(self) -> tuple[str, ...]:
        """The DiffGuard columns the rule reads: its score only."""
        return (SCORE,)

    def fit(self, baseline_val: Any, diffguard_val: Any) -> BandFusion:
        """baseline_val (M,), diffguard_val (M',): scores of ID-validation samples only."""
        b = _array(baseline_val, "baseline_val")
        d = _array(diffguard_val, "diffguard_val")
        lo = -np.inf if self.low_q == 0 else float(np.quantile(b, self.low_q))
        hi = np.inf if self.high_q == 1 else float(np.quantile(b, self.high_q))
        b_med, b_scale = _robust_scale(b)
        d_med, d_scale = _robust_scale(d)
        self._state = {"low_threshold": lo, "high_threshold": hi, "baseline_median": b_med, "baseline_scale": b_scale,
                       "diffguard_median": d_med, "diffguard_scale": d_scale,
                       "n_val_baseline": b.size, "n_val_diffguard": d.size}
        return self

    def tiers(self, baseline: Any, diffguard: Any = None) -> np.ndarray:
        """(N,) int: 0 confident ID, 1 hard case, 2 confident OOD (the band rule reads the baseline only)."""
        st = self._fitted()
        b = _array(baseline, "baseline")
        return np.where(b < st["low_threshold"], 0, np.where(b > st["high_threshold"], 2, 1))

    def needs_diffguard(self, baseline: Any) -> np.ndarray:
        """(N,) bool: the samples whose fused score reads DiffGuard's (the cascade runs DiffGuard on them only)."""
        return self.tiers(baseline) == 1

    def fuse(self, baseline: Any, diffguard: Any) -> np.ndarray:
        """baseline (N,), diffguard (N,) scores of the same samples -> (N,) float64 fused OOD score in (0, 3);
        DiffGuard's score is read only where :meth:`needs_diffguard` is True (any finite value elsewhere)."""
        b, d = _array(baseline, "baseline"), _array(diffguard, "diffguard")
        _same_samples(b, d, "diffguard")
        return self._tiered(b, self.tiers(b, d), d)

    def _tiered(self, b: np.ndarray, tier: np.ndarray, ranker: np.ndarray) -> np.ndarray:
        """tier + u: u squashes the baseline b (N,) in tiers 0 and 2 and ``ranker`` (N,), the DiffGuard column of
        the fitted ``diffguard_median`` / ``diffguard_scale``, in tier 1."""
        st = self._fitted()
        u_b = _squash(b, st["baseline_median"], st["baseline_scale"])
        u_d = _squash(ranker, st["diffguard_median"], st["diffguard_scale"])
        return tier + np.where(tier == 1, u_d, u_b)

    def report(self) -> dict[str, Any]:
        """Quantiles, thresholds and squash parameters, for the results table."""
        return {"rule": "band (project's own)", "low_q": self.low_q, "high_q": self.high_q, **self._fitted()}

    def report_state(self) -> dict[str, float]:
        """The fitted constants (what a saved guard keeps); :meth:`with_state` restores them."""
        return dict(self._fitted())

    def with_state(self, state: dict[str, float]) -> BandFusion:
        """This rule holding the fitted constants of :meth:`report_state` (floats round-trip through JSON)."""
        self._state = {k: float(v) for k, v in state.items()}
        return self

    def _fitted(self) -> dict[str, float]:
        if not self._state:
            raise RuntimeError("BandFusion is not fitted: call fit(baseline_val, diffguard_val) on ID-val scores")
        return self._state


@dataclass
class VetoBandFusion(BandFusion):
    """The band rule with a DiffGuard veto of the baseline's confident-OOD tier (the project's own, for
    full-spectrum detection: covariate-shifted ID images that push the baseline's score up, e.g. noisy images for
    feature-space baselines, while DiffGuard's re-synthesis still finds them semantically ID).

    Tiers as :class:`BandFusion`, except that a sample above the high threshold whose DiffGuard score is at or below
    the ``veto_q`` quantile of DiffGuard's ID-val scores (confidently ID for DiffGuard) is a hard case (tier 1,
    ranked by DiffGuard) instead of confidently OOD. ``veto_q = 0`` keeps only vetoes by scores at or below the
    smallest ID-val score; the band rule is the limit of no veto at all. DiffGuard runs on every sample at or above
    the low threshold (the band and the confident-OOD tier, which it may veto) and, with a cap, at or below it.

    **Veto cap** (``veto_cap_q``): DiffGuard may veto only where the baseline's score is at or below the
    ``veto_cap_q`` quantile of its ID-val scores (1.0: the largest). Beyond every score ID validation produced the
    baseline is certain, and a re-synthesis that leaves an image unchanged says nothing there: blank images and
    noise are near fixed points of inversion and re-synthesis (docs/tuning.md, "Far-OOD: why noise and blank images
    fool DiffGuard"), so an uncapped veto lets them through. Validation cannot show this (its OOD sets hold no such
    images), so the cap is a fixed design rule, not a tuned parameter. None: no cap.

    Args:
        low_q, high_q: as :class:`BandFusion`.
        veto_q: ID-val quantile of DiffGuard's score at or below which DiffGuard vetoes; 0 <= veto_q <= 1.
        veto_cap_q: ID-val quantile of the baseline's score above which no veto applies (high_q <= veto_cap_q <=
            1), or None for no cap (the veto rule's default; veto-split's is 1.0).
    """

    veto_q: float = 0.5
    veto_cap_q: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.veto_q <= 1.0:
            raise ValueError(f"need 0 <= veto_q <= 1, got veto_q={self.veto_q}")
        if self.veto_cap_q is not None and not self.high_q <= self.veto_cap_q <= 1.0:
            raise ValueError(f"need high_q <= veto_cap_q <= 1 (or no veto_cap_q), got high_q={self.high_q}, "
                             f"veto_cap_q={self.veto_cap_q}")

    def fit(self, baseline_val: Any, diffguard_val: Any) -> VetoBandFusion:
        super().fit(baseline_val, diffguard_val)
        d = _array(diffguard_val, "diffguard_val")
        self._state["veto_threshold"] = float(np.quantile(d, self.veto_q))
        self._fit_cap(baseline_val)
        return self

    def _fit_cap(self, baseline_val: Any) -> None:
        b = _array(baseline_val, "baseline_val")
        self._state["veto_cap"] = np.inf if self.veto_cap_q is None else float(np.quantile(b, self.veto_cap_q))

    def _vetoable(self, b: np.ndarray) -> np.ndarray:
        """(N,) bool: above the band and at or below the veto cap (a saved guard without a cap has none)."""
        st = self._fitted()
        return (b > st["high_threshold"]) & (b <= st.get("veto_cap", np.inf))

    def tiers(self, baseline: Any, diffguard: Any = None) -> np.ndarray:
        """(N,) int tiers; DiffGuard's scores are needed wherever the baseline puts a sample above the band (and at
        or below the veto cap)."""
        tier = super().tiers(baseline)
        b = _array(baseline, "baseline")
        vetoable = (tier == 2) & self._vetoable(b)
        if not vetoable.any():
            return tier
        if diffguard is None:
            raise ValueError("the veto rule needs DiffGuard's scores of the samples above the band")
        d = _array(diffguard, "diffguard")
        return np.where(vetoable & (d <= self._fitted()["veto_threshold"]), 1, tier)

    def needs_diffguard(self, baseline: Any) -> np.ndarray:
        b = _array(baseline, "baseline")
        return (BandFusion.tiers(self, b) == 1) | self._vetoable(b)

    def report(self) -> dict[str, Any]:
        return {**super().report(), "rule": "band with DiffGuard veto (project's own)", "veto_q": self.veto_q,
                "veto_cap_q": self.veto_cap_q}


def column_of(name: str) -> str:
    """The DiffGuard column a rule parameter names: ``"score"`` as it is, a distance ``<name>`` -> ``dist:<name>``."""
    return name if name == SCORE else f"dist:{name}"


@dataclass
class SplitVetoFusion(VetoBandFusion):
    """The veto rule with the veto and the band's ranking read from two DiffGuard columns (the project's own): e.g.
    the structural distance GMSD vetoes the baseline's confident-OOD tier and the logits distance, insensitive to
    shifts and noise, ranks the hard cases (benchmarks/fusion_explore.py: fewer covariate-shift false alarms than
    one score doing both, on validation data).

    ``fit`` on ID-val only: lo, hi as :class:`BandFusion` (quantiles of the baseline); the veto threshold t = the
    ``veto_q`` quantile of the ``veto_by`` column; median and IQR of the baseline and of the ``rank_by`` column
    (kept as ``diffguard_median`` / ``diffguard_scale``). Tiers: 0 when b < lo, 2 when b > hi and (veto > t or
    b > the cap), else 1 (the band and the vetoed samples); fused = tier + u, u the squashed baseline (tiers 0, 2)
    or ``rank_by`` column (tier 1). No veto above the veto cap (``veto_cap_q``, as :class:`VetoBandFusion`; here on
    by default: the largest ID-val baseline score). With ``veto_by = rank_by = "score"`` and the same cap it is
    :class:`VetoBandFusion`. DiffGuard runs on every sample at or above lo and at or below the cap.

    DiffGuard's input to :meth:`fit` and :meth:`fuse` is a mapping column -> (N,) scores holding
    :attr:`diffguard_columns` (:func:`diffguard_input` builds it from a DiffGuard method's columns).

    Args:
        low_q, high_q, veto_q: as :class:`VetoBandFusion` (veto_q: quantile of the ``veto_by`` column).
        veto_cap_q: as :class:`VetoBandFusion`; default 1.0: no veto above the largest ID-val baseline score.
        veto_by: the column that vetoes: ``"score"`` (DiffGuard's own, possibly calibrated, score) or a distance
            name (``gmsd``, ``logits_l1``, ``l2``, ``ssim``, ``psnr``, ...: its raw stored ``dist:<name>`` column).
        rank_by: the column that ranks the band, named the same way.
    """

    veto_cap_q: float | None = 1.0
    veto_by: str = "gmsd"
    rank_by: str = "logits_l1"
    takes_columns: ClassVar[bool] = True  # fit / fuse take a mapping column -> scores (see diffguard_input)

    def __post_init__(self) -> None:
        super().__post_init__()
        known = [SCORE, *DISTANCES.list()]
        for key in ("veto_by", "rank_by"):
            value = getattr(self, key)
            if value not in known:
                close = difflib.get_close_matches(str(value), known, n=2)
                hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
                raise ValueError(f"{key} must be 'score' (DiffGuard's score) or a distance name, one of {known}; "
                                 f"got {value!r}{hint}")

    @property
    def diffguard_columns(self) -> tuple[str, ...]:
        """The DiffGuard columns the rule reads, e.g. ``("dist:gmsd", "dist:logits_l1")`` (each once)."""
        return tuple(dict.fromkeys(column_of(n) for n in (self.veto_by, self.rank_by)))

    def fit(self, baseline_val: Any, diffguard_val: Mapping[str, Any]) -> SplitVetoFusion:
        """baseline_val (M,) and DiffGuard's columns {column: (M',)} of ID-validation samples only."""
        veto, rank = self._veto_and_rank(diffguard_val, "diffguard_val")
        BandFusion.fit(self, baseline_val, rank)
        self._state["veto_threshold"] = float(np.quantile(veto, self.veto_q))
        self._fit_cap(baseline_val)
        return self

    def tiers(self, baseline: Any, diffguard: Mapping[str, Any] | None = None) -> np.ndarray:
        """(N,) int tiers; DiffGuard's ``veto_by`` column is needed wherever the baseline is above the band."""
        veto = None if diffguard is None else self._veto_and_rank(diffguard, "diffguard")[0]
        return VetoBandFusion.tiers(self, baseline, veto)

    def fuse(self, baseline: Any, diffguard: Mapping[str, Any]) -> np.ndarray:
        """baseline (N,) and DiffGuard's columns {column: (N,)} of the same samples -> (N,) fused score in (0, 3);
        DiffGuard's columns are read only where :meth:`needs_diffguard` is True (any finite value elsewhere)."""
        b = _array(baseline, "baseline")
        veto, rank = self._veto_and_rank(diffguard, "diffguard")
        _same_samples(b, veto, f"diffguard[{column_of(self.veto_by)!r}]")
        _same_samples(b, rank, f"diffguard[{column_of(self.rank_by)!r}]")
        return self._tiered(b, VetoBandFusion.tiers(self, b, veto), rank)

    def report(self) -> dict[str, Any]:
        return {**super().report(), "rule": "band with DiffGuard veto, split columns (project's own)",
                "veto_by": self.veto_by, "rank_by": self.rank_by}

    def _veto_and_rank(self, columns: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(veto column, rank column) of DiffGuard's input mapping, checked."""
        if not isinstance(columns, Mapping):
            raise TypeError(f"the veto-split rule takes DiffGuard's {name} as a mapping column -> scores with "
                            f"{list(self.diffguard_columns)}, got {type(columns).__name__}; build it with "
                            "diffguard_input(rule, columns)")
        missing = [c for c in self.diffguard_columns if c not in columns]
        if missing:
            raise ValueError(f"{name} lacks DiffGuard column(s) {missing}; it has {sorted(columns)}")
        veto_col, rank_col = column_of(self.veto_by), column_of(self.rank_by)
        return _array(columns[veto_col], f"{name}[{veto_col!r}]"), _array(columns[rank_col], f"{name}[{rank_col!r}]")


def diffguard_input(rule: Any, columns: Mapping[str, Any]) -> Any:
    """What ``rule.fit`` / ``rule.fuse`` take as DiffGuard's input, from a DiffGuard method's columns (``"score"``
    and ``"dist:<name>"`` -> (N,) scores of the same samples): the mapping of the rule's ``diffguard_columns`` for a
    rule that ``takes_columns`` (veto-split), else the ``"score"`` array."""
    missing = [c for c in rule.diffguard_columns if c not in columns]
    if missing:
        raise UserError(f"the fusion rule reads DiffGuard's column(s) {missing}, which are not there (found: "
                        f"{sorted(columns)}): add the distance(s) to the DiffGuard method's distances and score it "
                        "again, or choose 'score' or a distance it computes")
    picked = {c: columns[c] for c in rule.diffguard_columns}
    return picked if rule.takes_columns else picked[SCORE]


def robust_standardise(x: Any) -> tuple[float, float]:
    """(median, scale) of 1-D scores: the inter-quartile range, falling back to the standard deviation, then to 1
    when the spread is 0 (the standardisation both fusion rules use)."""
    return _robust_scale(_array(x, "scores"))


@dataclass
class WeightedSumFusion:
    """Weighted sum of robust z-scores of a baseline and DiffGuard (both OOD scores, higher = more OOD).

    fused = (1 - weight) (b - median_b) / IQR_b + weight (d - median_d) / IQR_d, with median and IQR of each
    method's ID-validation scores (IQR -> std -> 1 when the spread is 0). weight = 0 ranks as the baseline,
    weight = 1 as DiffGuard; the fused score is affine in each input, so ties and order within one method are kept.

    Args:
        weight: DiffGuard's share w, 0 <= w <= 1.
    """

    weight: float = 0.5
    _state: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    takes_columns: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"need 0 <= weight <= 1, got weight={self.weight}")

    @property
    def diffguard_columns(self) -> tuple[str, ...]:
        """The DiffGuard columns the rule reads: its score only."""
        return (SCORE,)

    def fit(self, baseline_val: Any, diffguard_val: Any) -> WeightedSumFusion:
        """baseline_val (M,), diffguard_val (M',): scores of ID-validation samples only."""
        b = _array(baseline_val, "baseline_val")
        d = _array(diffguard_val, "diffguard_val")
        b_med, b_scale = _robust_scale(b)
        d_med, d_scale = _robust_scale(d)
        self._state = {"baseline_median": b_med, "baseline_scale": b_scale, "diffguard_median": d_med,
                       "diffguard_scale": d_scale, "n_val_baseline": b.size, "n_val_diffguard": d.size}
        return self

    def fuse(self, baseline: Any, diffguard: Any) -> np.ndarray:
        """baseline (N,), diffguard (N,) scores of the same samples -> (N,) float64 fused OOD score."""
        st = self._fitted()
        b, d = _array(baseline, "baseline"), _array(diffguard, "diffguard")
        _same_samples(b, d, "diffguard")
        z_b = (b - st["baseline_median"]) / st["baseline_scale"]
        z_d = (d - st["diffguard_median"]) / st["diffguard_scale"]
        return (1.0 - self.weight) * z_b + self.weight * z_d

    def report(self) -> dict[str, Any]:
        """Weight and standardisation parameters, for the results table."""
        return {"rule": "weighted sum of robust z-scores (project's own)", "weight": self.weight, **self._fitted()}

    def report_state(self) -> dict[str, float]:
        """The fitted constants (what a saved guard keeps); :meth:`with_state` restores them."""
        return dict(self._fitted())

    def with_state(self, state: dict[str, float]) -> WeightedSumFusion:
        """This rule holding the fitted constants of :meth:`report_state` (floats round-trip through JSON)."""
        self._state = {k: float(v) for k, v in state.items()}
        return self

    def _fitted(self) -> dict[str, float]:
        if not self._state:
            raise RuntimeError("WeightedSumFusion is not fitted: call fit(baseline_val, diffguard_val) on ID-val "
                               "scores")
        return self._state


FUSION_RULES: Registry[Any] = Registry("fusion rule")
FUSION_RULES.register("band")(BandFusion)
FUSION_RULES.register("weighted")(WeightedSumFusion)
FUSION_RULES.register("veto")(VetoBandFusion)
FUSION_RULES.register("veto-split")(SplitVetoFusion)


def create_fusion(rule: str, **params: Any) -> BandFusion | WeightedSumFusion:
    """A fusion rule by name (``band``: ``low_q``, ``high_q``; ``weighted``: ``weight``; ``veto``: ``low_q``,
    ``high_q``, ``veto_q``; ``veto-split``: ``low_q``, ``high_q``, ``veto_q``, ``veto_by``, ``rank_by``, each
    ``"score"`` or a distance name). Fit and fuse it with DiffGuard's input from :func:`diffguard_input`."""
    return FUSION_RULES.create(rule, **params)
