"""The run configuration of a benchmark: :class:`RunConfig`, and config files (YAML) mapped onto it with dotted
overrides.

A config names the benchmark, run settings and the methods; built-in configs live in ``diffguard/configs``
(``diffguard benchmark fmnist6`` uses ``fmnist6.yaml``). Overrides given as ``key=value``:

* run settings: ``limit=200``, ``val_limit=100``, ``batch_size=32``, ``sets=[test,near-fmnist]``;
* a method's parameter: ``diffguard-cfg.guidance.scale=5`` (a DiffGuard override), ``knn.k=100``;
* a key of a model spec: ``classifier.weights=/ckpt/resnet50.pth``.

String values may name environment variables as ``${NAME}`` (the paper configs take checkpoint paths this way);
a variable that is not set is an error that names it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from diffguard.bench.user_yaml import benchmark_ref, is_definition, looks_like_file
from diffguard.detectors.diffguard_presets import parse_value
from diffguard.detectors.fusion import FUSION_RULES, create_fusion
from diffguard.errors import ConfigError, UserError
from diffguard.specs.method_specs import MethodConfig
from diffguard.yaml_mapping import read_mapping


@dataclass(frozen=True)
class FusionConfig:
    """"DiffGuard + X": ``baseline`` and ``diffguard`` are method names of the run, combined by a fusion rule
    fitted on their ID-validation scores (see :mod:`diffguard.detectors.fusion`).

    Args:
        rule: "band" (quantiles ``low_q`` / ``high_q`` of the baseline's ID-val scores bound the band that DiffGuard
            decides), "weighted" (``weight``: DiffGuard's share of a sum of robust z-scores), "veto" (the band,
            plus ``veto_q``: DiffGuard's ID-val quantile at or below which it vetoes the confident-OOD tier) or
            "veto-split" (the veto rule with ``veto_by`` vetoing and ``rank_by`` ranking the band, each ``"score"``
            or the name of a distance the DiffGuard method computes, e.g. ``gmsd`` and ``logits_l1``). The veto rules
            take ``veto_cap_q``: no veto where the baseline's score is above that quantile of its ID-val scores
            (veto: no cap unless given; veto-split: 1.0, the largest ID-val score, unless given).
    """

    baseline: str
    diffguard: str
    low_q: float = 0.5
    high_q: float = 0.99
    rule: str = "band"
    weight: float = 0.5
    veto_q: float = 0.5
    veto_cap_q: float | None = None
    veto_by: str = "gmsd"
    rank_by: str = "logits_l1"

    def __post_init__(self) -> None:
        if self.rule not in FUSION_RULES:
            raise ConfigError(f"fusion {self.diffguard}+{self.baseline}: unknown rule {self.rule!r}; choose one of "
                              f"{FUSION_RULES.list()}")
        self.build()  # checks the rule's parameters now, not after the methods ran

    @property
    def key(self) -> str:
        """The fusion's name in a run's tables and files: ``DG+BASELINE`` (band rule; ``DG+BASELINE:<rule>``
        for the others, e.g. ``:weighted``, ``:veto``, ``:veto-split``, so several rules of one pair can sit in one
        run)."""
        base = f"{self.diffguard}+{self.baseline}"
        return base if self.rule == "band" else f"{base}:{self.rule}"

    def params(self) -> dict[str, float]:
        """The rule's own parameters (the fields its class declares; ``veto_cap_q`` left out when not given, so the
        rule's default applies: none for veto, 1.0 for veto-split)."""
        names = [f.name for f in dataclasses.fields(FUSION_RULES.get(self.rule)) if f.init]
        return {n: getattr(self, n) for n in names if not (n == "veto_cap_q" and self.veto_cap_q is None)}

    def build(self) -> Any:
        """An unfitted fusion rule (:func:`diffguard.detectors.fusion.create_fusion`)."""

        try:
            return create_fusion(self.rule, **self.params())
        except ValueError as e:
            raise ConfigError(f"fusion {self.key}: {e}") from None

    def describe(self) -> str:
        """Short parameter text for tables: ``q=(0.5, 0.99)``, ``w=0.3``, ``q=(0.8, 0.99), veto 0.5`` or
        ``q=(0.8, 0.99), veto 0.5 by gmsd, band by logits_l1``."""
        if self.rule == "weighted":
            return f"w={self.weight}"
        veto = f", veto {self.veto_q}" if self.rule in ("veto", "veto-split") else ""
        if self.rule in ("veto", "veto-split") and self.veto_cap_q is not None:
            veto += f" up to {self.veto_cap_q}"
        split = f" by {self.veto_by}, band by {self.rank_by}" if self.rule == "veto-split" else ""
        return f"q=({self.low_q}, {self.high_q}){veto}{split}"


@dataclass
class RunConfig:
    """Everything a benchmark run depends on (the CLI maps config files and ``--set`` overrides onto it).

    Args:
        benchmark: registered benchmark name (``fmnist6``, ``cifar10``, ``imagenet``) or a user benchmark's
            definition (a mapping with absolute paths; a config file may give a path to a definition YAML or an
            inline mapping, see :mod:`diffguard.bench.user_yaml`).
        methods: the methods to run, in order (cheap ones first is wise).
        fusion: "DiffGuard + X" combinations to evaluate.
        sets: restrict to these sets (default: all of the benchmark).
        limit: at most this many samples per test / OOD set, drawn with ``limit_seed`` (None = all).
        val_limit: at most this many ID-validation samples (thresholds and fusion calibration).
        train_limit: at most this many ID-training samples for fitting KNN / ViM / MDS (None = all, OpenOOD's way).
        batch_size: images per batch (methods may override).
        classifier, diffusion: model folders or specs (None = the shipped fmnist6 models; see
            :mod:`diffguard.specs.model_specs`).
        image_size: the benchmark images' side in pixels (None = the benchmark's; e.g. 224 for the GDM setting).
        ensemble: folders of all Deep-Ensemble members (None = the classifier plus the shipped
            ``fmnist6-classifier-s*`` folders).
        data_root: data folder (fmnist6: the Fashion-MNIST IDX files; others: OpenOOD's layout).
        gallery: input / synthesis pairs per end (most and least OOD) per set in the report.
        ablation: the name of the setting the methods vary (an ablation study); adds ``ablation.md`` and
            ``ablation.png`` (AUROC per variant) to the outputs.
        device: "auto" (``cuda:<local rank>`` when CUDA is available, else CPU), "cpu", "cuda", "cuda:N".
        about: a description for people (the paper configs: source, files, input, cost); not used by the run.
        recommended: the method or fusion key to deploy, chosen on validation data (kept in ``run_config.json``;
            ``diffguard export`` takes it by default); not part of the plan, so naming it never recomputes anything.
    """

    benchmark: str | dict[str, Any] = "fmnist6"
    methods: list[MethodConfig] = field(default_factory=list)
    fusion: list[FusionConfig] = field(default_factory=list)
    sets: list[str] | None = None
    limit: int | None = None
    val_limit: int | None = 500
    train_limit: int | None = None
    limit_seed: int = 0
    batch_size: int = 64
    classifier: str | dict[str, Any] | None = None
    diffusion: str | dict[str, Any] | None = None
    ensemble: list[str] | None = None
    data_root: str | None = None
    image_size: int | None = None
    gallery: int = 6
    ablation: str | None = None
    device: str = "auto"
    about: dict[str, Any] = field(default_factory=dict)
    recommended: str | None = None

    def plan_key(self) -> dict[str, Any]:
        """The settings that define the work units; a results file is only resumed under the same ones."""
        return {k: getattr(self, k) for k in ("benchmark", "sets", "limit", "val_limit", "train_limit", "limit_seed",
                                              "batch_size", "classifier", "diffusion",
                                              "image_size")}

    def method(self, name: str) -> MethodConfig:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"no method {name!r} in this run; methods: {[m.name for m in self.methods]}")


def fusion_title(cfg: RunConfig, f: FusionConfig) -> str:
    """A fusion's display name: ``DIFFGUARD + BASELINE`` titles, with the rule in brackets unless it is the band
    rule (``DiffGuard (tuned) + ViM (tuned) (veto-split)``), so two rules of one pair stay apart in tables."""
    title = f"{cfg.method(f.diffguard).title} + {cfg.method(f.baseline).title}"
    return title if f.rule == "band" else f"{title} ({f.rule})"


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """A JSON-able view of the run configuration (for manifests and reports); a user benchmark appears as its full
    definition with absolute paths, so a results folder rebuilds it alone."""

    d = asdict(cfg)
    if not isinstance(cfg.benchmark, str) or looks_like_file(cfg.benchmark):
        d["benchmark"] = benchmark_ref(cfg.benchmark)
    d["methods"] = [m.as_dict() for m in cfg.methods]
    return d


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def read_config_file(name_or_path: str | os.PathLike[str], variables: Mapping[str, str] | None = None,
                     ) -> dict[str, Any]:
    """Parse a built-in config name (e.g. ``fmnist6``) or a YAML path into a dict; ``${NAME}`` takes
    ``variables[NAME]``, else the environment variable."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(str(name_or_path), builtin_configs(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown benchmark config {str(name_or_path)!r}.{hint} Built-in: "
                             f"{', '.join(builtin_configs())}; or pass a path to a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = read_mapping(path, "config file", "of settings")
    missing: list[str] = []
    data = _expand(data, missing, {**os.environ, **(variables or {})})
    if missing:
        raise ConfigError(f"config {path.name} needs the environment variable(s) {sorted(set(missing))} "
                         "(paths to local files, see the comments in the config); set them and rerun")
    return _anchor_benchmark(data, path.absolute().parent)


def _anchor_benchmark(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Resolve a user benchmark (a path or an inline definition, relative paths from the config's ``folder``) to
    its full definition. A file that is itself a benchmark definition runs with the built-in fmnist6 config's
    settings and methods, less those that need the shipped fmnist6 Deep-Ensemble members."""

    if is_definition(data):
        defaults = read_config_file("fmnist6")
        defaults["methods"] = [m for m in defaults.get("methods", [])
                               if not MethodConfig.from_dict(m).needs.members]
        data = {**defaults, "benchmark": data}
    if "benchmark" in data:
        data["benchmark"] = benchmark_ref(data["benchmark"], folder)
    return data


def _expand(value: Any, missing: list[str], env: Mapping[str, str]) -> Any:
    """Replace ``${NAME}`` in every string with ``env[NAME]``; record unset names."""
    if isinstance(value, dict):
        return {k: _expand(v, missing, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, missing, env) for v in value]
    if isinstance(value, str):
        for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value):
            if name in env:
                value = value.replace("${" + name + "}", str(env[name]))
            else:
                missing.append(name)
    return value


class RunConfigError(ConfigError):
    """Every problem of a run config at once, raised before anything is computed or written.

    Attributes:
        problems: one line per problem (what is wrong and what to do).
    """

    def __init__(self, problems: Sequence[str]):
        self.problems = list(dict.fromkeys(" ".join(str(p).split()) for p in problems))
        n = len(self.problems)
        head = (f"the run config has {n} problem{'s' if n > 1 else ''}; nothing was computed or written. Fix "
                f"{'them all' if n > 1 else 'it'} and rerun:")
        super().__init__(head + "".join(f"\n  - {p}" for p in self.problems))


def problem_lines(err: BaseException) -> list[str]:
    """The problems an error reports: its ``problems`` (a :class:`RunConfigError` or a benchmark definition's
    error), else its message as one line."""
    return list(getattr(err, "problems", None) or [" ".join(str(err).split())])


@dataclass
class ParsedRunConfig:
    """A run config built from every usable entry of a config mapping, and the problems of the others.

    Attributes:
        config: the run config; entries with a problem are left out, so check ``problems`` before running it.
        problems: one line per problem found while reading the mapping.
        benchmark_ok: whether ``config.benchmark`` is the config's benchmark (False: it could not be read).
    """

    config: RunConfig
    problems: list[str]
    benchmark_ok: bool = True


def _about(subject: str, err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if text.startswith(subject.split(" ")[0]) else f"{subject}: {text}"


_PARTS = {"baseline", "diffguard"}


def _read_methods(entries: Any, problems: list[str]) -> tuple[list[MethodConfig], set[str]]:
    """(the methods whose entries can be read, the names of those that cannot: their problems are recorded)."""
    if not isinstance(entries, list):
        problems.append(f"methods: must be a list of method entries like {{name: knn}}, got {entries!r}")
        return [], set()
    methods, rejected = [], set()
    for e in entries:
        name = e.get("name") if isinstance(e, Mapping) else None
        try:
            if not isinstance(e, Mapping):
                raise ConfigError(f"each entry must be a mapping like {{name: knn}}, got {e!r}")
            methods.append(MethodConfig.from_dict(dict(e)))
        except UserError as err:
            problems.append(_about(f"method {name!r}" if name else "methods", err))
            rejected.add(str(name))
    return methods, rejected


def _expand_fusion(entries: Any, methods: list[MethodConfig], rejected: set[str],
                   problems: list[str]) -> list[FusionConfig]:
    """Fusion entries as :class:`FusionConfig` (``baseline: "*"``: one per baseline of the config); an entry
    that cannot be read is a recorded problem, one naming a method whose entry could not be read is left out."""
    if not isinstance(entries, list):
        problems.append(f"fusion: must be a list of entries like {{baseline: knn, diffguard: dg}}, got {entries!r}")
        return []
    baselines = [m.name for m in methods if not m.is_diffguard]
    keys = {f.name for f in dataclasses.fields(FusionConfig)}
    out: list[FusionConfig] = []
    for e in entries:
        problem = _fusion_entry_problem(e, keys)
        if problem:
            problems.append(problem)
            continue
        if {str(e["baseline"]), str(e["diffguard"])} & rejected:
            continue  # the method's own entry is reported
        names = baselines if e["baseline"] == "*" else [e["baseline"]]
        try:
            out += [FusionConfig(**{**e, "baseline": b}) for b in names]
        except (UserError, TypeError, ValueError) as err:
            problems.append(_about(f"fusion {e['diffguard']}+{e['baseline']}", err))
    return out


def _fusion_entry_problem(e: Any, keys: set[str]) -> str | None:
    """What is wrong with the form of a fusion entry, if anything."""
    if not isinstance(e, Mapping):
        return f"fusion: each entry must be a mapping like {{baseline: knn, diffguard: dg}}, got {e!r}"
    unknown = sorted(set(e) - keys)
    if unknown:
        return f"fusion entry {dict(e)}: unknown key(s) {unknown}; valid: {sorted(keys)}"
    if not _PARTS <= set(e):
        return (f"fusion entry {dict(e)}: needs baseline and diffguard, method names of this config (baseline '*': "
                "every baseline)")
    return None


def _apply_override(item: str, data: dict[str, Any], by_name: dict[str, MethodConfig], run_fields: set[str],
                    rejected: set[str]) -> str | None:
    """Apply one ``key=value`` override to ``data`` or a method of ``by_name``; the problem, if any."""
    key, sep, raw = item.partition("=")
    if not sep:
        return f"override {item!r} must look like key=value (e.g. limit=200)"
    head, _, rest = key.partition(".")
    if not rest and head in run_fields:
        data[head] = parse_value(raw)
    elif rest and head in ("classifier", "diffusion"):
        spec = data.get(head)
        data[head] = {**(spec if isinstance(spec, dict) else {}), rest: parse_value(raw)}
    elif rest and head in by_name:
        by_name[head] = _override_method(by_name[head], rest, raw)
    elif head not in rejected:  # a method whose entry could not be read is reported already
        close = difflib.get_close_matches(head, sorted(run_fields | set(by_name)), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return (f"override {item!r}: {head!r} is neither a run setting nor a method of this config.{hint} Settings: "
                f"{sorted(run_fields)}; methods: {sorted(by_name)}")
    return None


def parse_run_config(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> ParsedRunConfig:
    """Dict (from YAML) + ``key=value`` overrides -> the run config of every usable entry and the problems of the
    others (unknown keys, detectors, fusion rules, overrides; a benchmark definition that cannot be read), all of
    them, one line each. :func:`diffguard.run.config_check.checked_run_config` adds the checks against the
    benchmark."""
    data = dict(data)
    problems: list[str] = []
    methods, rejected = _read_methods(data.pop("methods", None) or [], problems)
    fusion_entries = data.pop("fusion", None) or []
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - {"methods", "fusion"}
    by_name = {m.name: m for m in methods}
    for item in overrides:
        problem = _apply_override(item, data, by_name, run_fields, rejected)
        problems += [problem] if problem else []
    unknown = sorted(set(data) - run_fields)
    if unknown:
        problems.append(f"unknown config key(s) {unknown}; valid: {sorted(run_fields)}")
    data = {k: v for k, v in data.items() if k in run_fields}
    benchmark_ok = True
    if "benchmark" in data:
        try:
            data["benchmark"] = benchmark_ref(data["benchmark"])
        except UserError as err:
            problems += problem_lines(err)
            benchmark_ok = False
            del data["benchmark"]
    methods = [by_name[m.name] for m in methods]
    fusion = _expand_fusion(fusion_entries, methods, rejected, problems)
    return ParsedRunConfig(RunConfig(methods=methods, fusion=fusion, **data), problems, benchmark_ok)


def build_run_config(data: dict[str, Any], overrides: list[str] = ()) -> RunConfig:
    """Dict (from YAML) + ``key=value`` overrides -> a :class:`RunConfig` whose entries could all be read.

    Raises:
        RunConfigError: every problem :func:`parse_run_config` found, one line each.
    """
    parsed = parse_run_config(data, overrides)
    if parsed.problems:
        raise RunConfigError(parsed.problems)
    return parsed.config


def _override_method(m: MethodConfig, key: str, raw: str) -> MethodConfig:
    return m.with_option(key, raw)


def load_run_config(name_or_path: str | os.PathLike[str], overrides: list[str] = ()) -> RunConfig:
    return build_run_config(read_config_file(name_or_path), list(overrides))
