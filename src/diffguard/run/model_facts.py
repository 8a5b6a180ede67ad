"""What model specs state about the images they take, checked against a benchmark before anything is built.

Part of the whole-config check (:mod:`diffguard.run.config_check`): from a model spec and the small JSON files of
model folders (no weights are read), the spec's type and keys, local files that do not exist, and classes,
channels and (for ``diffguard train`` diffusion folders, which run at the image size) image size against the
benchmark. A diffusion model is only checked when a method needs one, ensemble members only when a method uses them.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from diffguard.bench.definitions import BenchmarkSpec
from diffguard.detectors.ensemble import ensemble_folders
from diffguard.errors import UnknownNameError
from diffguard.model_files import shipped_or_path, shipped_path
from diffguard.registry import Registry
from diffguard.run.run_config import RunConfig
from diffguard.specs.model_specs import CLASSIFIER_TYPES, DIFFUSION_TYPES

MODEL_FILE_KEYS = ("folder", "checkpoint", "weights", "config", "scheduler", "vae")
"""Keys of a model spec that name a local file or folder (checked for existence)."""

def unknown_name(kind: str, name: Any, known: Iterable[str]) -> str | None:
    """None when ``name`` is one of ``known``; else the registry's refusal (closest names first, then all)."""
    registry: Registry[str] = Registry(kind)
    for k in sorted(set(known)):
        registry.register(k)(str)
    try:
        registry.get(str(name))
    except UnknownNameError as err:
        return str(err) if registry.list() else f"unknown {kind} {name!r} (there are none)"
    return None


@dataclass(frozen=True)
class ModelFacts:
    """What a model spec states about the images it takes, where it says so (None: not stated)."""

    source: str
    classes: int | None = None
    channels: int | None = None
    size: int | None = None


def model_problems(cfg: RunConfig, spec: BenchmarkSpec) -> list[str]:
    """The classifier's spec, and the diffusion model's and ensemble members' where a method uses them: type, keys,
    local files, and classes / channels / image size against the benchmark."""
    problems = spec_problems("classifier", cfg.classifier, CLASSIFIER_TYPES)
    problems += facts_problems("classifier", classifier_facts(cfg.classifier), spec,
                               "give the classifier trained for it (classifier: ... in the config, or --set "
                               "classifier=...; `diffguard train classifier --data BENCHMARK.yaml` trains one)")
    if any(m.needs.backend and "backend" not in m.params for m in cfg.methods):
        problems += spec_problems("diffusion", cfg.diffusion, DIFFUSION_TYPES)
        problems += facts_problems("diffusion model", diffusion_facts(cfg.diffusion), spec,
                                   "give the diffusion model trained for it (diffusion: ... in the config; "
                                   "`diffguard train diffusion --data BENCHMARK.yaml` trains one)")
    if any(m.needs.members and "members" not in m.params for m in cfg.methods):
        for folder in [f for f in member_folders(cfg) if isinstance(f, (str, os.PathLike))]:
            problems += facts_problems(f"ensemble member {folder}", folder_classifier_facts(Path(folder)), spec,
                                       "list the members trained for it (ensemble: [folders] in the config)")
    return problems


def spec_problems(kind: str, model: Any, registry: Registry[Any]) -> list[str]:
    """A model spec's form: a folder that exists, or a mapping with a registered type, the keys its loader takes,
    and local files that exist."""
    if model is None:
        return []
    if isinstance(model, (str, os.PathLike)):
        return [] if Path(model).expanduser().exists() else [f"{kind}: folder {model} does not exist"]
    if not isinstance(model, Mapping):
        return [f"{kind}: the spec must be a folder path, a mapping with a type, or null; got {model!r}"]
    if "type" not in model:
        return [f"{kind}: the spec {dict(model)} needs a 'type': one of {registry.list()} (or give a folder path)"]
    try:
        factory = registry.get(str(model["type"]))
    except UnknownNameError as err:
        return [f"{kind}: {err}"]
    problems = _key_problems(kind, model, factory)
    by_name = model["type"] in ("fmnist6", "shipped")
    for key in MODEL_FILE_KEYS:
        value = model.get(key)
        if isinstance(value, str) and not (shipped_or_path(value) if by_name else Path(value).expanduser()).exists():
            problems.append(f"{kind}: {key} {value} does not exist (diffguard reads local files only)")
    return problems


def _key_problems(kind: str, model: Mapping[str, Any], factory: Any) -> list[str]:
    params = inspect.signature(factory).parameters
    accepted = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    what = f"{kind} spec type {model['type']!r}"
    problems = []
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        problems += [f"{what}: {unknown_name('key', k, accepted)}" for k in model if k != "type" and k not in accepted]
    missing = [n for n in accepted if params[n].default is params[n].empty and n not in model]
    if missing:
        problems.append(f"{what} needs key(s) {missing}")
    return problems


def facts_problems(what: str, facts: ModelFacts | None, spec: BenchmarkSpec, fix: str) -> list[str]:
    """Stated classes, channels and image size that differ from the benchmark's."""
    if facts is None:
        return []
    problems = []
    if facts.classes is not None and facts.classes != spec.num_classes:
        problems.append(f"{what}: {facts.classes} classes ({facts.source}) but benchmark {spec.name!r} has "
                        f"{spec.num_classes}: {fix}")
    if facts.channels is not None and facts.channels != spec.channels:
        problems.append(f"{what}: takes {facts.channels}-channel images ({facts.source}) but benchmark {spec.name!r} "
                        f"has {spec.channels}-channel images: {fix}")
    if facts.size is not None and facts.size != spec.image_size:
        problems.append(f"{what}: made for {facts.size}-pixel images ({facts.source}) but benchmark {spec.name!r} has "
                        f"{spec.image_size}-pixel images: {fix}")
    return problems


def classifier_facts(model: Any) -> ModelFacts | None:
    """Classes and channels a classifier spec states: a model folder's ``config.json``, the shipped classifier's
    for null, else the spec's ``num_classes`` (``type: module``: also its ``kwargs``' ``num_classes`` and
    ``in_channels``; ``type: timm``: ``in_chans``). The image size is not compared: classifiers resize their input."""
    if model is None:
        return folder_classifier_facts(shipped_path("classifier"))
    if isinstance(model, (str, os.PathLike)):
        return folder_classifier_facts(Path(model).expanduser())
    if not isinstance(model, Mapping):
        return None
    kind = model.get("type")
    if kind in ("fmnist6", "shipped"):
        return folder_classifier_facts(shipped_or_path(model.get("folder")) or shipped_path("classifier"))
    kwargs = model.get("kwargs") if kind == "module" and isinstance(model.get("kwargs"), Mapping) else {}
    channels = model.get("in_chans") if kind == "timm" else kwargs.get("in_channels", kwargs.get("in_chans"))
    return ModelFacts(f"its {kind} spec", _int(model.get("num_classes", kwargs.get("num_classes"))), _int(channels))


def folder_classifier_facts(folder: Path) -> ModelFacts | None:
    """Classes and channels from a classifier folder's ``config.json`` (``diffguard train`` or timm format)."""
    cfg = _json(folder / "config.json")
    source = str(folder / "config.json")
    if "arch" in cfg:
        return ModelFacts(source, _int(cfg.get("num_classes")), _int(cfg.get("in_channels")))
    if "architecture" in cfg:
        shape = (cfg.get("pretrained_cfg") or {}).get("input_size") or [None]
        return ModelFacts(source, _int(cfg.get("num_classes", 1000)), _int(shape[0]))
    return None


def diffusion_facts(model: Any) -> ModelFacts | None:
    """Classes, channels and image size of a ``diffguard train`` diffusion folder (its ``diffguard.json``; the
    shipped one for null). Such a model runs at the benchmark's image size, so its training size must match; other
    backends resize their input and state nothing compared here."""
    folder: Path | None = None
    if model is None:
        folder = shipped_path("diffusion")
    elif isinstance(model, (str, os.PathLike)):
        folder = Path(model).expanduser()
    elif isinstance(model, Mapping) and model.get("type") in ("fmnist6", "shipped"):
        folder = shipped_or_path(model.get("folder")) or shipped_path("diffusion")
    elif isinstance(model, Mapping) and model.get("type") == "diffusers" and isinstance(model.get("folder"), str):
        folder = Path(model["folder"]).expanduser()
    info = _json(folder / "diffguard.json") if folder is not None else {}
    if not info:
        return None
    return ModelFacts(str(folder / "diffguard.json"), _int(info.get("num_classes")), _int(info.get("channels")),
                      _int(info.get("resolution")))


def member_folders(cfg: RunConfig) -> list[Any]:
    """The Deep-Ensemble members a run uses (the runner's one rule): ``ensemble``, else the classifier (the shipped
    one when none is given) and the shipped ``-s*`` members."""
    if cfg.ensemble:
        return list(cfg.ensemble)
    shipped = [str(p) for p in ensemble_folders()]
    return [cfg.classifier or shipped[0], *shipped[1:]]


def _json(path: Path) -> dict[str, Any]:
    """A small JSON file's mapping; empty when it is missing or unreadable (its loader reports that)."""
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
