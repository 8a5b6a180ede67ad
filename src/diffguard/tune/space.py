"""Search spaces as data: one :class:`Space` per detector name (:data:`SPACES`), and the fusion rule's space.

Baselines get OpenOOD v1.5's APS sweeps (``configs/postprocessors/*.yml``, see docs/reference/ood-ecosystem.md):

=========== ========================================== ===============================================================
detector    space                                      note
=========== ========================================== ===============================================================
odin        temperature {1, 10, 100, 1000} x eps        OpenOOD's grid
            {0.0014, 0.0028}
knn         k {50, 100, 200, 500, 1000}                 OpenOOD's grid (k above the ID-train rows is pruned)
vim         dim = fraction {1/8, 1/4, 1/2, 3/4} of D    OpenOOD's {256, 1000} assume ResNet-18's D = 512: 256 is D/2,
                                                        1000 >= D silently degrades to energy (EBO covers that); we
                                                        search the fraction of the feature width D instead
ebo         temperature {1}                             OpenOOD's "sweep" is one point
msp, mls,   (nothing)                                   one trial with the defaults (OpenOOD: no sweep, APS off)
mds, ...
diffnb      noise_levels top {120, 240, 360} x space    not an OpenOOD method: its base score's noise level and the
            {logit, feature}                            representation (DiffNB paper, Sec. 4)
=========== ========================================== ===============================================================

DiffGuard's space: guidance mode (the ``fmnist6-cfg`` / ``fmnist6-clean-grad`` presets; the ``gdm`` and ``ldm`` presets
stay themselves), CFG scale and CAM cut (None = plain CFG, else DSG), Clean Grad scale, x0-hat or x_t gradient and
cutouts, DDIM steps, the inversion cap (a fraction of the steps), the early-stop threshold and the reference. Its
*distance* is post-hoc (``post_hoc="distance"``): every trial computes every distance once and the tuner ranks
them (and z-scored pairs) without synthesising again, each raw and class-calibrated (``calibration: class``,
:mod:`diffguard.detectors.calibration`), which is post-hoc as well.

A space small enough and all categorical is searched as a grid; any other with Optuna's TPE sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping

from diffguard.errors import UnknownNameError
from diffguard.specs.method_specs import MethodConfig

Kind = Literal["categorical", "float", "int"]
MAX_GRID = 64


@dataclass(frozen=True)
class Param:
    """One searched setting.

    Args:
        name: the name Optuna records (unique within a space).
        kind: "categorical" (``choices``), "float" or "int" (``low`` .. ``high``, ``log`` scale).
        choices: categorical values (scalars, None or tuples; tuples are recorded as "a,b" labels).
        low, high, log: the range of a float or int parameter.
        target: the method-spec key it sets (default ``name``): a detector parameter (``k``) or a dotted DiffGuard
            override (``guidance.scale``).
        via: "option" (:meth:`MethodConfig.with_option`: an override where the detector takes overrides, else a
            parameter) or "param" (a constructor parameter set directly, e.g. DiffGuard's ``preset``).
        fraction_of: the value is a fraction of this quantity (another parameter's target, e.g.
            ``inversion.steps``, or a data fact, e.g. ``feature_dim``); the spec gets round(fraction * quantity).
        when: (parameter name, values): searched only when that parameter (or the start spec's value) is one of
            these.
        sticky: a start value outside ``choices`` stays as it is (not searched), e.g. the ``ldm`` preset.
        drops: prefixes of the start spec's overrides dropped when this parameter changes the start value (they
            belong to what it replaces, e.g. ``guidance.`` overrides of another preset).
    """

    name: str
    kind: Kind = "categorical"
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    target: str = ""
    via: Literal["option", "param"] = "option"
    fraction_of: str | None = None
    when: tuple[str, tuple[Any, ...]] | None = None
    sticky: bool = False
    drops: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.target or self.name

    def labels(self) -> list[Any]:
        return [label(c) for c in self.choices]

    def decode(self, value: Any) -> Any:
        """The choice behind a recorded label (the value itself for float / int parameters)."""
        if self.kind != "categorical":
            return value
        for c in self.choices:
            if label(c) == value:
                return c
        raise ValueError(f"{value!r} is not a choice of {self.name}: {self.labels()}")

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter in an Optuna trial; returns the decoded value."""
        if self.kind == "categorical":
            return self.decode(trial.suggest_categorical(self.name, self.labels()))
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(label(c) == label(value) for c in self.choices)
        return isinstance(value, (int, float)) and self.low <= value <= self.high


def label(value: Any) -> Any:
    """What Optuna stores for a categorical value: scalars and None as they are, tuples as "a,b"."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return value


@dataclass(frozen=True)
class Space:
    """The searched settings of one method; ``post_hoc="distance"`` marks DiffGuard's post-hoc distance choice."""

    params: tuple[Param, ...] = ()
    post_hoc: str | None = None

    def active(self, values: Mapping[str, Any], start: Mapping[str, Any]) -> list[Param]:
        """The parameters searched given the values drawn so far (``when`` conditions) and the start values."""
        out = []
        for p in self.params:
            if p.when and values.get(p.when[0], start.get(p.when[0])) not in p.when[1]:
                continue
            if p.sticky and p.name in start and not p.contains(start[p.name]):
                continue
            out.append(p)
        return out

    def suggest(self, trial: Any, start: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Draw every active parameter in order; returns {name: decoded value}."""
        values: dict[str, Any] = {}
        start = start or {}
        for p in self.params:
            if p in self.active(values, start):
                values[p.name] = p.suggest(trial)
        return values

    @property
    def gridable(self) -> bool:
        """All categorical, unconditional and at most :data:`MAX_GRID` points: searched as a grid."""
        return (all(p.kind == "categorical" and not p.when and not p.sticky for p in self.params)
                and self.grid_size <= MAX_GRID)

    @property
    def grid_size(self) -> int:
        return math.prod(len(p.choices) for p in self.params) if self.params else 1

    def grid(self) -> dict[str, list[Any]]:
        """Optuna GridSampler's search space: {name: labels}."""
        return {p.name: p.labels() for p in self.params}

    def start_labels(self, start: Mapping[str, Any]) -> dict[str, Any]:
        """The start values Optuna can record (inside the space), as labels, for the first (enqueued) trial."""
        return {p.name: label(start[p.name]) for p in self.params
                if p.name in start and p.contains(start[p.name])}

    def apply(self, cfg: MethodConfig, values: Mapping[str, Any], facts: Mapping[str, Any] | None = None,
              start: Mapping[str, Any] | None = None) -> MethodConfig:
        """The method spec ``cfg`` with the drawn ``values`` set (``facts``: data facts such as ``feature_dim`` and
        the start spec's values of targets, for ``fraction_of``; ``start``: the start values, defaults included,
        for ``drops``)."""
        facts, start = facts or {}, start or {}
        by_target = {p.key: values[p.name] for p in self.params if p.name in values and not p.fraction_of}
        for p in self.params:
            if p.name not in values:
                continue
            v = values[p.name]
            if p.fraction_of:
                base = by_target.get(p.fraction_of, facts.get(p.fraction_of))
                if base is None:
                    raise ValueError(f"{p.name} is a fraction of {p.fraction_of!r}, which is not known")
                v = max(1, int(round(v * base)))
            if p.via == "param":
                params = dict(cfg.params)
                if p.drops and start.get(p.name, params.get(p.key)) != v:
                    params["overrides"] = [o for o in params.get("overrides", []) if not o.startswith(p.drops)]
                cfg = replace(cfg, params={**params, p.key: v})
            else:
                cfg = cfg.with_option(p.key, v if isinstance(v, str) else repr(v))
        return cfg


def cat(name: str, choices: tuple[Any, ...], **kw: Any) -> Param:
    return Param(name, "categorical", choices, **kw)


def num(name: str, low: float, high: float, log: bool = False, **kw: Any) -> Param:
    return Param(name, "float", low=low, high=high, log=log, **kw)


_CFG = ("fmnist6-cfg", "ldm")  # presets whose guidance is CFG (+ DSG)
_GRAD = ("fmnist6-clean-grad", "gdm")  # presets whose guidance is Clean Grad

DIFFGUARD_SPACE = Space((
    cat("preset", ("fmnist6-cfg", "fmnist6-clean-grad"), via="param", sticky=True, drops=("guidance.",)),
    num("cfg.scale", 1.0, 20.0, log=True, target="guidance.scale", when=("preset", _CFG)),
    cat("cfg.cam_cut", (None, 0.1, 0.2, 0.3), target="guidance.cam_cut", when=("preset", _CFG)),
    num("grad.scale", 0.5, 10.0, log=True, target="guidance.scale", when=("preset", _GRAD)),
    cat("grad.use_x0_hat", (True, False), target="guidance.use_x0_hat", when=("preset", _GRAD)),
    cat("grad.cutouts", (0, 4, 8), target="guidance.cutouts", when=("preset", _GRAD)),
    cat("inversion.steps", (10, 25, 50)),
    cat("inversion.cap_fraction", (0.4, 0.6, 0.8, 1.0), target="inversion.cap", fraction_of="inversion.steps"),
    cat("inversion.stop", ("none", "psnr:4", "psnr:6.39", "psnr:9")),
    cat("reference", ("input", "unguided")),
), post_hoc="distance")

SPACES: dict[str, Space] = {
    "msp": Space(),
    "mls": Space(),
    "mds": Space(),
    "ebo": Space((cat("temperature", (1.0,)),)),
    "odin": Space((cat("temperature", (1.0, 10.0, 100.0, 1000.0)), cat("eps", (0.0014, 0.0028)))),
    "knn": Space((cat("k", (50, 100, 200, 500, 1000)),)),
    "vim": Space((cat("dim_fraction", (0.125, 0.25, 0.5, 0.75), target="dim", fraction_of="feature_dim"),)),
    "mc_dropout": Space(),
    "ensemble": Space(),
    "diffnb": Space((cat("noise_levels", ((0, 120), (0, 240), (0, 360))), cat("space", ("logit", "feature")))),
    "diffguard": DIFFGUARD_SPACE,
}

FUSION_SPACE = Space((
    cat("rule", ("band", "weighted")),
    num("low_q", 0.0, 0.9, when=("rule", ("band",))),
    num("high_q", 0.9, 1.0, when=("rule", ("band",))),
    num("weight", 0.0, 1.0, when=("rule", ("weighted",))),
))


def space_for(detector: str) -> Space:
    """The search space of a registered detector name (aliases resolved by the caller)."""
    if detector not in SPACES:
        raise UnknownNameError(f"no search space for detector {detector!r}; spaces exist for {sorted(SPACES)}: "
                               "add one to diffguard/tune/space.py")
    return SPACES[detector]
