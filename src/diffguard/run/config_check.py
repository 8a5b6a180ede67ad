"""The whole run config checked before a model is built, an image read or a results folder written.

:func:`check_run_config` collects every problem of a :class:`~diffguard.run.run_config.RunConfig` against its
benchmark and raises them together, one line each, in one :class:`~diffguard.run.run_config.RunConfigError`, so a
user fixes everything in one go; :func:`checked_run_config` does the same from a config mapping, adding the problems
of entries that could not even be read (an unknown detector, fusion rule or config key; a broken benchmark
definition). What is checked:

* run settings: ``limit``, ``val_limit``, ``train_limit`` (positive or null), ``batch_size`` (positive);
* methods: unique names; the parameters of each baseline; for DiffGuard the preset, its options and overrides
  (:func:`~diffguard.detectors.diffguard_presets.resolve_preset`, which builds no model), ``reference``,
  ``label_mode`` and every distance named in ``distances`` / ``score_distance`` (with ``score_scales``); ``reuse``;
* fusions: both parts are methods of the config (the rule was checked when the entry was read); the distances a
  rule reads (veto-split's ``veto_by`` / ``rank_by``) are computed by its DiffGuard method; ``recommended`` names
  a method or fusion key of the config;
* ``--methods``: each name is a method of the config;
* the benchmark: every set name in ``sets:``, the roles a run needs, an ID-train set when a method fits on one, no
  set named with the reserved ``set:`` prefix; a ``csid`` set named ``val...`` is not refused but gets a
  :class:`RoleWarning` (:func:`role_warnings`): it is test data, validation data has ``role: val_csid``;
* models (:mod:`diffguard.run.model_facts`), from their specs and the small JSON files of model folders (no
  weights are read): the spec's type and keys, local files that do not exist, and classes, channels and (for ``diffguard train`` diffusion folders, which
  run at the image size) image size against the benchmark. A diffusion model is only checked when a method needs
  one, ensemble members only when a method uses them.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any, Mapping, Sequence, get_args

from diffguard.bench.definitions import ROLES, RUN_NEEDS, SET_ROW_PREFIX, BenchmarkSpec, Role
from diffguard.bench.open_sets import resolve_benchmark
from diffguard.detectors.detector import detector_factory
from diffguard.detectors.diffguard import DiffGuard, LabelMode, Reference
from diffguard.detectors.diffguard_presets import apply_overrides, resolve_preset
from diffguard.distances import DISTANCES
from diffguard.distances.combined import check_scales, score_names
from diffguard.errors import UserError
from diffguard.run.model_facts import model_problems, unknown_name
from diffguard.run.plan import legacy_csid_names, legacy_csid_warning
from diffguard.run.run_config import RunConfig, RunConfigError, parse_run_config, problem_lines
from diffguard.specs.method_specs import MethodConfig, check_reuse

_BUILT_IN = ("classifier", "backend", "members")  # what the builder passes to a detector, never a config parameter


def check_run_config(cfg: RunConfig, spec: BenchmarkSpec, requested: Sequence[str] | None = None,
                     needs: Sequence[Role] = RUN_NEEDS) -> None:
    """Refuse a run config with every problem at once (see the module docstring); builds and reads nothing heavy.

    Args:
        cfg: the run config.
        spec: its benchmark (``cfg.image_size`` replaces the benchmark's image size, as in the run).
        requested: the ``--methods`` subset, when one was given.
        needs: roles the benchmark must have a set for (a run: the ID test set and ID validation).

    Raises:
        RunConfigError: one line per problem.

    Warns:
        RoleWarning: one per :func:`role_warnings` line (the run goes on).
    """
    problems = run_config_problems(cfg, spec, requested, needs)
    if problems:
        raise RunConfigError(problems)
    for note in role_warnings(spec):
        warnings.warn(note, RoleWarning, stacklevel=2)


def checked_run_config(data: Mapping[str, Any], overrides: Sequence[str] = (),
                       requested: Sequence[str] | None = None) -> tuple[RunConfig, BenchmarkSpec]:
    """The run config of a mapping (a config file's) with ``key=value`` overrides, and its benchmark, with the
    problems of both reported together.

    Returns:
        (the config, its benchmark spec with the config's ``image_size`` applied).

    Raises:
        RunConfigError: one line per problem, those of unreadable entries included.
    """
    parsed = parse_run_config(dict(data), list(overrides))
    problems = list(parsed.problems)
    spec = None
    if parsed.benchmark_ok:
        try:
            spec = resolve_benchmark(parsed.config.benchmark, needs=())
        except UserError as err:
            problems += problem_lines(err)
    if spec is None:
        problems += config_problems(parsed.config, requested)
    else:
        problems += run_config_problems(parsed.config, spec, requested)
    if problems:
        raise RunConfigError(problems)
    return parsed.config, _sized(parsed.config, spec)


def run_config_problems(cfg: RunConfig, spec: BenchmarkSpec, requested: Sequence[str] | None = None,
                        needs: Sequence[Role] = RUN_NEEDS) -> list[str]:
    """Every problem of ``cfg`` on benchmark ``spec``, one line each (empty: the config can run)."""
    spec = _sized(cfg, spec)
    return [*config_problems(cfg, requested), *benchmark_problems(cfg, spec, needs), *model_problems(cfg, spec)]


def config_problems(cfg: RunConfig, requested: Sequence[str] | None = None) -> list[str]:
    """The problems that do not depend on the benchmark: settings, methods, fusions and ``--methods``."""
    names = [m.name for m in cfg.methods]
    unknown = [unknown_name("method of this config", n, names) for n in requested or ()]
    return [*setting_problems(cfg), *method_problems(cfg.methods), *fusion_problems(cfg),
            *(f"--methods: {u}" for u in unknown if u)]


def _sized(cfg: RunConfig, spec: BenchmarkSpec) -> BenchmarkSpec:
    return spec if cfg.image_size is None else dataclasses.replace(spec, image_size=cfg.image_size)


# -- settings, methods, fusions ----------------------------------------------------------------------------------


def setting_problems(cfg: RunConfig) -> list[str]:
    """Sample limits positive or null, the batch size positive."""
    problems = [f"{key}: must be a positive integer or null (every image), got {getattr(cfg, key)!r}"
                for key in ("limit", "val_limit", "train_limit") if not _positive(getattr(cfg, key), none_ok=True)]
    if not _positive(cfg.batch_size):
        problems.append(f"batch_size: must be a positive integer, got {cfg.batch_size!r}")
    return problems


def _positive(value: Any, none_ok: bool = False) -> bool:
    if value is None:
        return none_ok
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def method_problems(methods: Sequence[MethodConfig]) -> list[str]:
    """Unique names; each method's parameters (DiffGuard: preset, options, overrides, distances); ``reuse``."""
    names = [m.name for m in methods]
    dup = sorted({n for n in names if names.count(n) > 1})
    problems = [f"method names must be unique; repeated: {dup}: give each entry its own name"] if dup else []
    for m in methods:
        problems += diffguard_problems(m) if m.is_diffguard else parameter_problems(m)
    if not problems:  # reuse compares resolved presets: only meaningful once those resolve
        try:
            check_reuse(list(methods))
        except UserError as err:
            problems.append(str(err))
    return problems


def parameter_problems(m: MethodConfig) -> list[str]:
    """Parameters a (non-DiffGuard) detector's constructor does not take, with the closest valid ones."""
    params = inspect.signature(detector_factory(m.detector)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    valid = [n for n in params if n not in _BUILT_IN]
    return [f"method {m.name!r}: {unknown_name(f'{m.detector} parameter', k, valid)}"
            for k in sorted(set(m.params) - set(params))]


def diffguard_problems(m: MethodConfig) -> list[str]:
    """A DiffGuard method's preset, preset options and overrides resolved (no model is built), then the values
    DiffGuard itself would refuse: unknown settings, ``reference``, ``label_mode`` and the distances."""
    params = {k: v for k, v in m.params.items() if k not in _BUILT_IN}
    preset = params.pop("preset", inspect.signature(detector_factory(m.detector)).parameters["preset"].default)
    overrides = params.pop("overrides", [])
    if not isinstance(preset, str):
        return [f"method {m.name!r}: preset must be a preset name, got {preset!r}"]
    try:
        kwargs = resolve_preset(preset, [], **params)
    except (UserError, ValueError, TypeError) as err:
        return [_about(f"method {m.name!r}", err)]
    problems = []
    for item in overrides:  # one at a time, as resolve_preset applies them, so each bad one is reported
        try:
            kwargs = apply_overrides(kwargs, [str(item)])
        except (UserError, ValueError, TypeError) as err:
            problems.append(_about(f"method {m.name!r}", err))
    fields = [n for n in inspect.signature(DiffGuard).parameters if n not in _BUILT_IN]
    problems += [f"method {m.name!r} (its overrides): {unknown_name('DiffGuard setting', k, fields)}"
                 for k in sorted(set(kwargs) - set(fields))]
    for key, allowed in (("reference", get_args(Reference)), ("label_mode", get_args(LabelMode))):
        if key in kwargs and kwargs[key] not in allowed:
            problems.append(f"method {m.name!r}: {key} must be one of {list(allowed)}, got {kwargs[key]!r}")
    return problems + [f"method {m.name!r}: {p}" for p in distance_problems(kwargs)]


def distance_problems(kwargs: Mapping[str, Any]) -> list[str]:
    """Every distance DiffGuard's keyword arguments name is registered; ``score_distance`` (one name or several
    joined by "+") uses only listed distances, with valid ``score_scales``."""
    default = inspect.signature(DiffGuard).parameters["distances"].default
    distances = kwargs.get("distances", default)
    if isinstance(distances, str) or not isinstance(distances, Sequence) or not distances:
        return [f"distances must be a non-empty list of distance names, e.g. distances=('l2','ssim'); got "
                f"{distances!r}"]
    problems = [f"distances: {u}" for u in (unknown_name("distance", d, DISTANCES.list()) for d in distances) if u]
    score = kwargs.get("score_distance") or distances[0]
    try:
        parts = score_names(str(score))
    except ValueError as err:
        return problems + [f"score_distance: {err}"]
    for p in parts:
        unknown = unknown_name("distance", p, DISTANCES.list())
        if unknown:
            problems.append(f"score_distance: {unknown}")
        elif p not in distances:
            problems.append(f"score_distance {score!r} uses {p!r}, not among the distances {list(distances)}: add it "
                            "to distances")
    try:
        check_scales(parts, kwargs.get("score_scales"))
    except (ValueError, TypeError) as err:
        problems.append(f"score_scales: {err}")
    return problems


def fusion_problems(cfg: RunConfig) -> list[str]:
    """Both parts of every fusion are methods of the config (a fusion of a missing method is never dropped
    silently); no two entries share a key (their rows and thresholds would collide); every distance a rule reads (veto-split's ``veto_by`` / ``rank_by``) is one its DiffGuard method
    computes."""
    names = [m.name for m in cfg.methods]
    problems = []
    for f in cfg.fusion:
        for part, name in (("diffguard", f.diffguard), ("baseline", f.baseline)):
            unknown = unknown_name("method of this config", name, names)
            if unknown:
                problems.append(f"fusion {f.key}: {part}: {unknown}")
        if f.diffguard in names:
            problems += [f"fusion {f.key}: {p}" for p in column_problems(f, cfg.method(f.diffguard))]
    keys = [f.key for f in cfg.fusion]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        problems.append(f"fusion {key}: {keys.count(key)} entries with this key (one pair, one rule); keep one, or "
                        "use another rule for the other")
    if cfg.recommended is not None:
        unknown = unknown_name("method or fusion key of this config", cfg.recommended,
                                names + [f.key for f in cfg.fusion])
        if unknown:
            problems.append(f"recommended: {unknown}")
    return problems


def column_problems(f: Any, dg: MethodConfig) -> list[str]:
    """The DiffGuard distance columns (``dist:<name>``) fusion ``f`` reads that method ``dg`` does not store."""
    wanted = [c[len("dist:"):] for c in f.build().diffguard_columns if c.startswith("dist:")]
    if not wanted:
        return []
    if not dg.is_diffguard:
        return [f"reads DiffGuard's distance(s) {wanted}, but {dg.name!r} is not a DiffGuard method: name a "
                "DiffGuard method as diffguard, or use 'score' for veto_by / rank_by"]
    have = resolved_distances(dg)
    if have is None:  # the method's own problem is reported
        return []
    return [f"reads the distance {n!r}, which DiffGuard method {dg.name!r} does not compute (its distances: "
            f"{list(have)}): add it to the method's distances (e.g. the override distances={(*have, n)!r}), "
            "or choose 'score' or one of its distances" for n in wanted if n not in have]


def resolved_distances(m: MethodConfig) -> tuple[str, ...] | None:
    """The distances a DiffGuard method computes (its stored ``dist:<name>`` columns), its preset, options and
    overrides resolved; None when they do not resolve (:func:`diffguard_problems` reports why)."""
    params = {k: v for k, v in m.params.items() if k not in _BUILT_IN}
    preset = params.pop("preset", inspect.signature(detector_factory(m.detector)).parameters["preset"].default)
    overrides = [str(o) for o in params.pop("overrides", [])]
    try:
        kwargs = resolve_preset(preset, overrides, **params)
    except (UserError, ValueError, TypeError):
        return None
    distances = kwargs.get("distances", inspect.signature(DiffGuard).parameters["distances"].default)
    if isinstance(distances, str) or not isinstance(distances, Sequence):
        return None
    return tuple(str(d) for d in distances)


def _about(subject: str, err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if text.startswith(subject) else f"{subject}: {text}"


# -- the benchmark -------------------------------------------------------------------------------------------------


def benchmark_problems(cfg: RunConfig, spec: BenchmarkSpec, needs: Sequence[Role] = RUN_NEEDS) -> list[str]:
    """Roles and set names of the benchmark, the names in ``sets:``, and ID-train data for fitting methods."""
    problems = [f"benchmark {spec.name!r}, set {s.name!r}: role {s.role!r} is not one of {', '.join(ROLES)}"
                for s in spec.sets if s.role not in ROLES]
    problems += [f"benchmark {spec.name!r}, set {s.name!r}: set names may not start with {SET_ROW_PREFIX!r} (reserved "
                 "for metric rows); rename the set" for s in spec.sets if s.name.startswith(SET_ROW_PREFIX)]
    missing = [r for r in needs if not spec.by_role(r)]
    if missing:
        problems.append(f"benchmark {spec.name!r} has no set with role {' or '.join(map(repr, missing))}, which a "
                        f"benchmark run needs: add one (role: {missing[0]}) to its sets")
    if cfg.sets is not None:
        if isinstance(cfg.sets, str) or not isinstance(cfg.sets, Sequence):
            problems.append(f"sets: must be a list of set names, e.g. sets: [test, near-fmnist]; got {cfg.sets!r}")
        else:
            known = [s.name for s in spec.sets]
            problems += [f"sets: {u}" for u in (unknown_name(f"{spec.name} set", n, known)
                                                for n in cfg.sets) if u]
    fitting = [m.name for m in cfg.methods if m.needs.fit]
    if fitting and not spec.by_role("train"):
        problems.append(f"method(s) {fitting} fit on ID-train data, but benchmark {spec.name!r} has no set with role "
                        "'train': add one, or leave those methods out")
    return problems


class RoleWarning(UserWarning):
    """A benchmark set whose role may not be what its author meant (the run goes on)."""


def role_warnings(spec: BenchmarkSpec) -> list[str]:
    """One line per ``csid`` set named ``val...``: test data, though the old name rule made it validation data."""
    return [legacy_csid_warning(n) for n in legacy_csid_names(spec)]
