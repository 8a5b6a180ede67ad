"""Method specs: one format for every detector, in Python, YAML and on the command line, and the one builder.

A method spec names a registered detector (:func:`diffguard.detectors.list_detectors`) and its parameters::

    {name: knn, params: {k: 50}}                                   # method defaults to the name
    {name: diffguard-cfg, method: diffguard, params: {preset: fmnist6-cfg, overrides: [guidance.scale=5]}}

``preset`` and ``overrides`` may also be given at the top level of a DiffGuard entry (they are moved into
``params``). What the builder passes besides ``params`` -- the classifier, the diffusion backend, the ensemble
members -- follows the detector's declared :class:`~diffguard.detectors.detector.Needs`, never its name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from diffguard.detectors.calibration import CALIBRATIONS
from diffguard.detectors.detector import Detector, Needs, create_detector, detector_factory, needs_of
from diffguard.detectors.diffguard_presets import parse_value, resolve_preset
from diffguard.errors import ConfigError

DIFFGUARD = "diffguard"
_SUGAR = ("preset", "overrides")
_LEGACY = ("kind", "baseline")


@dataclass(frozen=True)
class MethodConfig:
    """One method of a run.

    Args:
        name: unique key in the results (e.g. ``"diffguard-cfg"``, ``"knn"``).
        method: registered detector name (default: ``name``).
        params: constructor parameters; for DiffGuard the ``preset``, its arguments, DiffGuard fields and dotted
            ``overrides`` (a list of ``key=value``).
        display: name in tables (default: ``name``).
        batch_size: images per batch for this method (default: the run's).
        calibration: ``"class"`` to judge each score on its label's ID-val scale
            (:mod:`diffguard.detectors.calibration`; applied to the stored raw scores at evaluation, so changing
            it never recomputes anything); None: raw scores.
        reuse: name of an earlier DiffGuard method of the run with the same parameters apart from its labelling
            (the ``label_mode`` / ``guidance.cam_of`` overrides) that guides towards the prediction: rows this
            method guides towards the same label are copied from it instead of being synthesised again (e.g. the
            oracle-label variant of a method recomputes only misclassified ID rows and OOD rows). A copied row is
            what this method would compute up to float32 rounding; it never changes which rows are scored.
    """

    name: str
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    display: str = ""
    batch_size: int | None = None
    calibration: str | None = None
    reuse: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("every method needs a name")
        detector_factory(self.detector)  # unknown names are refused here, with close matches
        if self.calibration is not None and self.calibration not in CALIBRATIONS:
            raise ConfigError(f"method {self.name!r}: unknown calibration {self.calibration!r}; choose one of "
                              f"{list(CALIBRATIONS)} or leave it out (raw scores)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodConfig:
        """A spec mapping (see the module docstring; the older ``kind`` / ``baseline`` keys are understood)."""
        d = dict(d)
        known = {f for f in cls.__dataclass_fields__} | set(_SUGAR) | set(_LEGACY)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"method entry {d.get('name', d)!r}: unknown key(s) {unknown}; valid: "
                              f"{sorted(cls.__dataclass_fields__)} (and preset / overrides for DiffGuard)")
        kind, baseline = d.pop("kind", None), d.pop("baseline", None)
        if kind not in (None, "baseline", DIFFGUARD):
            raise ConfigError(f"method {d.get('name')!r}: kind must be 'diffguard' or 'baseline', got {kind!r}")
        params = dict(d.pop("params", None) or {})
        for key in _SUGAR:
            if key in d:
                params[key] = d.pop(key)
        if "overrides" in params:
            params["overrides"] = [str(o) for o in params["overrides"]]
        method = d.pop("method", None) or baseline or (DIFFGUARD if kind == DIFFGUARD or "preset" in params else "")
        return cls(method=method, params=params, **d)

    def as_dict(self) -> dict[str, Any]:
        """The canonical spec (what ``run_config.json`` stores)."""
        out = {"name": self.name, "method": self.detector, "params": dict(self.params),
               "batch_size": self.batch_size, "display": self.display}
        if self.calibration is not None:
            out["calibration"] = self.calibration
        return out if self.reuse is None else {**out, "reuse": self.reuse}

    @property
    def detector(self) -> str:
        """The registered detector this method builds."""
        return self.method or self.name

    @property
    def is_diffguard(self) -> bool:
        return self.detector == DIFFGUARD

    @property
    def needs(self) -> Needs:
        return needs_of(self.detector)

    @property
    def title(self) -> str:
        return self.display or self.name

    def with_option(self, key: str, value: str) -> MethodConfig:
        """This spec with one ``key=value`` changed: a dotted override when the detector takes ``overrides`` (e.g.
        DiffGuard's ``guidance.scale``), else the constructor parameter ``key`` (e.g. KNN's ``k``)."""


        params = dict(self.params)
        if "overrides" in _signature(self.detector):
            params["overrides"] = [*params.get("overrides", []), f"{key}={value}"]
        else:
            params[key] = parse_value(value)
        return replace(self, params=params)

    def with_params(self, options: dict[str, Any], overrides: Sequence[str] = ()) -> MethodConfig:
        """This spec with ``options`` replacing parameters and ``overrides`` appended after its own (for DiffGuard,
        dotted ``key=value`` changes applied last)."""

        params = {**self.params, **options}
        if overrides:
            params["overrides"] = [*self.params.get("overrides", []), *map(str, overrides)]
        return replace(self, params=params)

    def seed(self) -> int | None:
        """The seed of this method's randomness (None when it has none): its ``seed`` parameter, else the
        detector's default (for DiffGuard the preset's seed, after overrides)."""
        if not self.needs.randomness:
            return None
        if "seed" in self.params:
            return int(self.params["seed"])
        factory = detector_factory(self.detector)
        default_seed: Callable[..., int] | None = getattr(factory, "default_seed", None)
        if default_seed is not None:
            return int(default_seed(**self.params))
        p = _signature(self.detector).get("seed")
        return int(p.default) if p is not None and p.default is not inspect.Parameter.empty else 0


_LABELLING = ("label_mode", "guidance.cam_of")


def check_reuse(methods: list[MethodConfig]) -> None:
    """Refuse a ``reuse`` that could copy rows the method would compute differently: the source must be an earlier
    DiffGuard method of the run, with the same batch size and parameters apart from the labelling overrides
    (``label_mode``, ``guidance.cam_of``), guiding towards the prediction."""
    earlier: dict[str, MethodConfig] = {}
    for m in methods:
        if m.reuse is not None:
            src = earlier.get(m.reuse)
            why = _reuse_problem(m, src)
            if why:
                raise ConfigError(f"method {m.name!r}: cannot reuse {m.reuse!r}: {why}; remove `reuse` to compute "
                                  "every row")
        earlier[m.name] = m


def _reuse_problem(m: MethodConfig, src: MethodConfig | None) -> str:
    if src is None:
        return "no earlier method of the run has that name (the source must come first)"
    if not (m.is_diffguard and src.is_diffguard):
        return "both must be DiffGuard methods"
    if m.batch_size != src.batch_size:
        return f"batch sizes differ ({m.batch_size} against {src.batch_size})"
    if "labels" in m.params or "labels" in src.params:
        return "explicit labels are not supported"
    mine, theirs = _split_labelling(m.params), _split_labelling(src.params)
    if mine[0] != theirs[0]:
        return "their parameters differ beyond the labelling overrides (label_mode, guidance.cam_of)"

    options = {k: v for k, v in src.params.items() if k not in ("preset", "overrides")}
    preset = src.params.get("preset", _signature(DIFFGUARD)["preset"].default)
    resolved = resolve_preset(preset, src.params.get("overrides", []), **options)
    if resolved.get("label_mode", "predicted") != "predicted":
        return "the source must guide towards the prediction (label_mode=predicted)"
    return ""


def _split_labelling(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(params without the labelling overrides, {labelling key: value})."""
    rest = [str(o) for o in params.get("overrides", [])]
    labelling = {o.split("=", 1)[0].strip(): o.split("=", 1)[1].strip() for o in rest
                 if o.split("=", 1)[0].strip() in _LABELLING}
    kept = [o for o in rest if o.split("=", 1)[0].strip() not in _LABELLING]
    out = {k: v for k, v in params.items() if k not in ("overrides", "label_mode")}
    return {**out, "overrides": kept}, labelling


def _signature(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(detector_factory(name)).parameters)


def build_method(cfg: MethodConfig, classifier: Any, backend: Any = None, members: Any = None) -> Detector:
    """Build the detector of a method spec. ``backend`` and ``members`` are objects or zero-argument callables
    (built lazily, only for detectors that need them)."""
    params = dict(cfg.params)
    needs = cfg.needs
    if needs.backend and "backend" not in params:
        if backend is None:
            raise ConfigError(f"method {cfg.name!r} ({cfg.detector}) needs a diffusion model: give a diffusion spec")
        params["backend"] = backend() if callable(backend) else backend
    if needs.members and "members" not in params:
        params["members"] = members() if callable(members) else members
    sig = _signature(cfg.detector)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
        unknown = sorted(set(params) - set(sig))
        if unknown:
            valid = sorted(set(sig) - {"classifier", "backend", "members"})
            raise ConfigError(f"method {cfg.name!r}: unknown parameter(s) {unknown} for {cfg.detector!r}; "
                              f"valid: {valid}")
    return create_detector(cfg.detector, classifier, **params)
