"""Run configuration files (YAML) mapped onto :class:`~diffguard.eval.runner.RunConfig`, plus dotted overrides.

A config names the benchmark, run settings and the methods; built-in configs live in ``diffguard/configs``
(``diffguard benchmark fmnist6`` uses ``fmnist6.yaml``). Overrides given as ``key=value``:

* run settings: ``limit=200``, ``val_limit=100``, ``batch_size=32``, ``sets=[test,near-fmnist]``;
* a method's DiffGuard option: ``diffguard-cfg.guidance.scale=5`` (appended to that method's overrides);
* a baseline parameter: ``knn.k=100``;
* a key of a model spec: ``classifier.weights=/ckpt/resnet50.pth``.

String values may name environment variables as ``${NAME}`` (the paper configs take checkpoint paths this way);
a variable that is not set is an error that names it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any

from diffguard.eval.methods import MethodConfig
from diffguard.eval.plan import FusionConfig, RunConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def read_config_file(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a built-in config name (e.g. ``fmnist6``) or a YAML path into a dict."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(str(name_or_path), builtin_configs(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown benchmark config {str(name_or_path)!r}.{hint} Built-in: "
                             f"{', '.join(builtin_configs())}; or pass a path to a YAML file")
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    missing: list[str] = []
    data = _expand(data, missing)
    if missing:
        raise ValueError(f"config {path.name} needs the environment variable(s) {sorted(set(missing))} "
                         "(paths to local files, see the comments in the config); set them and rerun")
    return data


def _expand(value: Any, missing: list[str]) -> Any:
    """Replace ``${NAME}`` in every string with the environment variable; record unset names."""
    if isinstance(value, dict):
        return {k: _expand(v, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, missing) for v in value]
    if isinstance(value, str):
        for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value):
            if name in os.environ:
                value = value.replace("${" + name + "}", os.environ[name])
            else:
                missing.append(name)
    return value


def _expand_fusion(entries: list[dict[str, Any]], methods: list[MethodConfig]) -> list[FusionConfig]:
    baselines = [m.name for m in methods if m.kind == "baseline"]
    out = []
    for e in entries:
        unknown = sorted(set(e) - {f.name for f in dataclasses.fields(FusionConfig)})
        if unknown:
            raise ValueError(f"fusion entry {e}: unknown key(s) {unknown}")
        names = baselines if e.get("baseline") == "*" else [e["baseline"]]
        out += [FusionConfig(**{**e, "baseline": b}) for b in names]
    return out


def build_run_config(data: dict[str, Any], overrides: list[str] = ()) -> RunConfig:
    """Dict (from YAML) + ``key=value`` overrides -> a validated :class:`RunConfig`."""
    from diffguard.presets import parse_value

    data = dict(data)
    methods = [MethodConfig.from_dict(m) for m in data.pop("methods", [])]
    fusion_entries = data.pop("fusion", [])
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - {"methods", "fusion"}
    by_name = {m.name: m for m in methods}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value (e.g. limit=200)")
        head, _, rest = key.partition(".")
        if not rest and head in run_fields:
            data[head] = parse_value(raw)
        elif rest and head in ("classifier", "diffusion"):
            spec = data.get(head)
            data[head] = {**(spec if isinstance(spec, dict) else {}), rest: parse_value(raw)}
        elif rest and head in by_name:
            by_name[head] = _override_method(by_name[head], rest, raw)
        else:
            close = difflib.get_close_matches(head, sorted(run_fields | set(by_name)), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"override {item!r}: {head!r} is neither a run setting nor a method of this config."
                             f"{hint} Settings: {sorted(run_fields)}; methods: {sorted(by_name)}")
    unknown = sorted(set(data) - run_fields)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid: {sorted(run_fields)}")
    methods = [by_name[m.name] for m in methods]
    return RunConfig(methods=methods, fusion=_expand_fusion(fusion_entries, methods), **data)


def _override_method(m: MethodConfig, key: str, raw: str) -> MethodConfig:
    from diffguard.presets import parse_value

    if m.kind == "diffguard":
        return dataclasses.replace(m, overrides=m.overrides + (f"{key}={raw}",))
    return dataclasses.replace(m, params={**m.params, key: parse_value(raw)})


def load_run_config(name_or_path: str | os.PathLike[str], overrides: list[str] = ()) -> RunConfig:
    return build_run_config(read_config_file(name_or_path), list(overrides))
