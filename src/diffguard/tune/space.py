"""Search spaces: each detector's own (declared beside its code), the fusion rules' (:func:`fusion_space`), setting
drawn values on a spec.

:func:`space_for` reads the ``search_space`` a registered detector declares (:mod:`diffguard.detectors.search_space`
holds the data types :class:`Param` and :class:`Space`); :func:`apply_values` sets the values a trial drew on a
method spec. Baselines get OpenOOD v1.5's APS sweeps (``configs/postprocessors/*.yml``, see
docs/reference/ood-ecosystem.md):

=========== ========================================== ===============================================================
detector    space (declared in)                        note
=========== ========================================== ===============================================================
odin        temperature {1, 10, 100, 1000} x eps        OpenOOD's grid
            {0.0014, 0.0028} (``detectors/odin.py``)
knn         k {50, 100, 200, 500, 1000}                 OpenOOD's grid (k above the ID-train rows is pruned)
            (``detectors/knn.py``)
vim         dim = fraction {1/8, 1/4, 1/2, 3/4} of D    OpenOOD's {256, 1000} assume ResNet-18's D = 512: 256 is D/2,
            (``detectors/vim.py``)                      1000 >= D silently degrades to energy (EBO covers that); we
                                                        search the fraction of the feature width D instead
ebo         temperature {1} (``detectors/ebo.py``)      OpenOOD's "sweep" is one point
msp, mls,   nothing (an empty ``Space()`` in each       one trial with the defaults (OpenOOD: no sweep, APS off); a
mds, ...    file; ``DetectorBase``'s default)           detector that declares no space gets the same
diffnb      noise_levels top {120, 240, 360} x space    not an OpenOOD method: its base score's noise level and the
            {logit, feature} (``detectors/diffnb.py``)  representation (DiffNB paper, Sec. 4)
diffguard   see below (``DIFFGUARD_SPACE`` in           the function attribute ``diffguard_detector.search_space``
            ``detectors/diffguard_presets.py``)
=========== ========================================== ===============================================================

DiffGuard's space: guidance mode (the ``fmnist6-cfg`` / ``fmnist6-clean-grad`` presets; a start preset outside these
two, e.g. ``gdm``, ``ldm`` or ``starter-cfg``, stays itself), the guidance settings of the preset's declared guidance
family (``cfg``: CFG scale and CAM cut, None = plain CFG, else DSG; ``clean_grad``: Clean Grad scale, x0-hat or x_t
gradient and cutouts), DDIM steps, the inversion cap (a fraction of the steps), the early-stop threshold and the
reference. Its *distance* is post-hoc (``post_hoc="distance"``): every trial computes every distance once and the
tuner ranks them (and z-scored pairs) without synthesising again, each raw and class-calibrated (``calibration:
class``, :mod:`diffguard.detectors.calibration`), which is post-hoc as well.

A space small enough and all categorical is searched as a grid; any other with Optuna's TPE sampler.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

from diffguard.detectors.detector import detector_factory
from diffguard.detectors.search_space import MAX_GRID, Kind, Param, Space, cat, label, num
from diffguard.errors import UnknownNameError
from diffguard.specs.method_specs import MethodConfig

__all__ = ["FUSION_COLUMNS", "FUSION_SPACE", "MAX_GRID", "Kind", "Param", "Space", "apply_values", "cat",
           "fusion_space", "label", "num", "space_for"]

FUSION_COLUMNS = ("score", "gmsd", "logits_l1", "l2", "ssim")
"""DiffGuard columns veto-split's ``veto_by`` / ``rank_by`` are searched over: its score and four distances."""


def fusion_space(columns: Sequence[str] = FUSION_COLUMNS) -> Space:
    """The fusion rules' space: the rule, then its parameters (band: ``low_q``, ``high_q``; weighted: ``weight``;
    veto: ``veto_q`` besides; veto-split: ``veto_by`` and ``rank_by`` besides, each one of ``columns``, the
    DiffGuard columns its stored scores hold). Without a distance among ``columns`` veto-split would be the veto
    rule, so it is left out."""
    split = ("veto-split",) if any(c != "score" for c in columns) else ()
    params = [cat("rule", ("band", "weighted", "veto", *split)),
              num("low_q", 0.0, 0.9, when=("rule", ("band", "veto", *split))),
              num("high_q", 0.9, 1.0, when=("rule", ("band", "veto", *split))),
              num("weight", 0.0, 1.0, when=("rule", ("weighted",))),
              num("veto_q", 0.0, 0.9, when=("rule", ("veto", *split)))]
    if split:
        params += [cat("veto_by", tuple(columns), when=("rule", split)),
                   cat("rank_by", tuple(columns), when=("rule", split))]
    return Space(tuple(params))


FUSION_SPACE = fusion_space()
"""The fusion space with every column of :data:`FUSION_COLUMNS` (a study's own keeps those its scores hold)."""


def space_for(detector: str) -> Space:
    """The search space a registered detector declares (its factory's ``search_space``; aliases accepted)."""
    space = getattr(detector_factory(detector), "search_space", None)
    if not isinstance(space, Space):
        raise UnknownNameError(f"detector {detector!r} declares no search space: give its class (or registered "
                               "factory) a `search_space = Space((...))` attribute, an empty Space() for one trial "
                               "with the defaults (diffguard.detectors.search_space)")
    return space


def apply_values(space: Space, cfg: MethodConfig, values: Mapping[str, Any],
                 facts: Mapping[str, Any] | None = None, start: Mapping[str, Any] | None = None) -> MethodConfig:
    """The method spec ``cfg`` with the ``values`` drawn from ``space`` set.

    Args:
        space: the space the values were drawn from.
        cfg: the start method spec.
        values: {parameter name: decoded value}, as :meth:`Space.suggest` returns them.
        facts: data facts such as ``feature_dim`` and the start spec's values of targets, for ``fraction_of``.
        start: the start values, defaults included, for ``drops``.
    """
    facts, start = facts or {}, start or {}
    by_target = {p.key: values[p.name] for p in space.params if p.name in values and not p.fraction_of}
    for p in space.params:
        if p.name not in values:
            continue
        v = values[p.name]
        if p.fraction_of:
            v = _fraction(p, v, by_target.get(p.fraction_of, facts.get(p.fraction_of)))
        cfg = _set_param(cfg, p, v, start) if p.via == "param" else cfg.with_option(
            p.key, v if isinstance(v, str) else repr(v))
    return cfg


def _fraction(p: Param, fraction: float, base: Any) -> int:
    """round(fraction * base), at least 1."""
    if base is None:
        raise ValueError(f"{p.name} is a fraction of {p.fraction_of!r}, which is not known")
    return max(1, int(round(fraction * base)))


def _set_param(cfg: MethodConfig, p: Param, value: Any, start: Mapping[str, Any]) -> MethodConfig:
    """``cfg`` with the constructor parameter ``p.key`` set (dropping ``p.drops`` overrides when it changes)."""
    params = dict(cfg.params)
    if p.drops and start.get(p.name, params.get(p.key)) != value:
        params["overrides"] = [o for o in params.get("overrides", []) if not o.startswith(p.drops)]
    return replace(cfg, params={**params, p.key: value})
