"""Search spaces as plain data: :class:`Param` (one searched setting) and :class:`Space` (a method's settings).

Every registered detector declares the space ``diffguard tune`` searches beside its code, as it declares ``needs``:
a baseline class as ``search_space = Space((...))`` (an empty :class:`Space` by default: one trial with the
defaults), DiffGuard's registered factory as the function attribute ``diffguard_detector.search_space``
(:mod:`diffguard.detectors.diffguard_presets`). Setting the drawn values on a method spec needs the spec types above
this package and lives in :mod:`diffguard.tune.space`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

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
        via: "option" (``MethodConfig.with_option``: an override where the detector takes overrides, else a
            parameter) or "param" (a constructor parameter set directly, e.g. DiffGuard's ``preset``).
        fraction_of: the value is a fraction of this quantity (another parameter's target, e.g.
            ``inversion.steps``, or a data fact, e.g. ``feature_dim``); the spec gets round(fraction * quantity).
        when: (name, values): searched only when that parameter (or the start spec's value) is one of these; the
            name may also be a value the space derives from a parameter (:attr:`Space.derived`).
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
    """The searched settings of one method; ``post_hoc="distance"`` marks DiffGuard's post-hoc distance choice.

    Args:
        params: the searched settings, drawn in this order.
        post_hoc: "distance" for DiffGuard (every distance computed once per trial and ranked), else None.
        derived: values ``when`` conditions may name besides the parameters: {name: (parameter name, function of
            its value)}, e.g. DiffGuard's ``{"guidance_family": ("preset", guidance_family)}``. Code, not data: left
            out of the repr (which a study records) and of equality.
    """

    params: tuple[Param, ...] = ()
    post_hoc: str | None = None
    derived: Mapping[str, tuple[str, Callable[[Any], Any]]] = field(default_factory=dict, repr=False, compare=False)

    def condition_value(self, name: str, values: Mapping[str, Any], start: Mapping[str, Any]) -> Any:
        """The value a ``when`` condition on ``name`` compares: drawn, else the start value (derived if named so)."""
        source, derive = self.derived.get(name, (name, None))
        value = values.get(source, start.get(source))
        return derive(value) if derive is not None and value is not None else value

    def active(self, values: Mapping[str, Any], start: Mapping[str, Any]) -> list[Param]:
        """The parameters searched given the values drawn so far (``when`` conditions) and the start values."""
        out = []
        for p in self.params:
            if p.when and self.condition_value(p.when[0], values, start) not in p.when[1]:
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


def cat(name: str, choices: tuple[Any, ...], **kw: Any) -> Param:
    """A categorical parameter."""
    return Param(name, "categorical", choices, **kw)


def num(name: str, low: float, high: float, log: bool = False, **kw: Any) -> Param:
    """A float parameter in [low, high] (``log`` scale if asked)."""
    return Param(name, "float", low=low, high=high, log=log, **kw)

