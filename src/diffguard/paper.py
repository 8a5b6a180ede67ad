"""The paper's settings as detectors, built from their run configs.

The DiffGuard settings themselves are the presets' (:mod:`diffguard.detectors.diffguard_presets`: ``gdm`` is the
authors' exp6.1, ``ldm`` their ldm-exp2.25, each with the paper's values as its defaults). The run configs
``configs/imagenet-gdm.yaml`` (Table 2 "Ours (GDM)"), ``configs/imagenet-ldm.yaml`` (Table 2 "Ours (LDM)") and
``configs/cifar10.yaml`` (Table 1) name the preset and add what it cannot know: the models, the data, the baselines
and the files (e.g. the DISTS weights). Their ``about:`` block says where each setting comes from, the files it
needs (the ``${NAME}`` variables), the input size and preprocessing, and the network evaluations per image.
``diffguard benchmark imagenet-gdm`` runs one on a benchmark; :func:`build_paper_detector` builds its DiffGuard for
your own images::

    from diffguard.paper import build_paper_detector

    det = build_paper_detector("imagenet-gdm", adm_checkpoint="256x256_diffusion_uncond.pt",
                               resnet50_weights="resnet50-0676ba61.pth", dists_weights="dists_vgg16.safetensors")
    scores = det.predict(x)   # x: (B, 3, 224, 224) in [-1, 1]; higher = more OOD

Each file variable is given by its lower-case name (``ADM_CHECKPOINT`` -> ``adm_checkpoint=``) or, failing that,
taken from the environment variable, as the command line does. Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from diffguard.detectors.diffguard import DiffGuard
from diffguard.errors import ConfigError
from diffguard.run.run_config import CONFIG_DIR, build_run_config, builtin_configs, read_config_file
from diffguard.specs.method_specs import build_method
from diffguard.specs.model_specs import build_backend, build_classifier

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MODEL_KEYS = ("classifier", "diffusion")


def _config_path(name: str | os.PathLike[str]) -> Path:
    path = Path(name)
    if path.suffix or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    if not (CONFIG_DIR / f"{name}.yaml").is_file():
        read_config_file(name)  # raises the unknown-config error with close names
    return CONFIG_DIR / f"{name}.yaml"


def _raw(name: str | os.PathLike[str]) -> dict[str, Any]:
    data = yaml.safe_load(_config_path(name).read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"config {name} must hold a mapping of settings")
    return data


def _variables(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for item in value.values() for v in _variables(item)]
    if isinstance(value, list):
        return [v for item in value for v in _variables(item)]
    return _VARIABLE.findall(value) if isinstance(value, str) else []


def paper_settings() -> dict[str, dict[str, Any]]:
    """The built-in configs that describe a paper setting (an ``about:`` block naming its source): name -> about."""

    out = {}
    for name in builtin_configs():
        about = _raw(name).get("about")
        if isinstance(about, dict) and "paper" in about:
            out[name] = about
    return out


def setting_files(name: str | os.PathLike[str], replaced: Sequence[str] = ()) -> dict[str, str]:
    """The file variables of a config (``{NAME: description}``, from its ``about.files``), less those used only by
    the ``replaced`` top-level keys (e.g. ``["diffusion"]`` when another diffusion spec is given)."""
    raw = _raw(name)
    described = (raw.get("about") or {}).get("files") or {}
    kept = {k: v for k, v in raw.items() if k not in replaced and k != "about"}
    return {v: str(described.get(v, "a local file")) for v in dict.fromkeys(_variables(kept))}


def build_paper_detector(name: str | os.PathLike[str], *, classifier: Any = None, diffusion: Any = None,
                         method: str | None = None, overrides: Sequence[str] = (), **values: Any) -> DiffGuard:
    """The DiffGuard of a paper config (``imagenet-gdm``, ``imagenet-ldm``, ``cifar10``, or a YAML path).

    Args:
        name: the config.
        classifier, diffusion: model specs replacing the config's (:mod:`diffguard.specs.model_specs`), e.g.
            ``diffusion={"type": "diffusers", "folder": "cifar10-cond", "null_label": 10}``; their files are then
            not needed.
        method: the config's DiffGuard method to build when it has several (default: the only one).
        overrides: dotted DiffGuard overrides applied after the config's (e.g. ``["guidance.scale=5"]``).
        values: the config's file variables by lower-case name (``adm_checkpoint="/ckpt/...pt"``); any other
            keyword is a preset argument or DiffGuard field replacing the config's (e.g. ``steps=10``).

    Raises:
        ConfigError: a file variable given neither here nor in the environment (its description is shown).
    """

    replaced = [k for k, spec in zip(_MODEL_KEYS, (classifier, diffusion)) if spec is not None]
    every, needed = setting_files(name), setting_files(name, replaced)
    variables = {var: str(values.pop(var.lower())) for var in every if var.lower() in values}
    missing = {var: text for var, text in needed.items() if var not in variables and var not in os.environ}
    if missing:
        wanted = "; ".join(f"{v.lower()}=<{text}>" for v, text in missing.items())
        raise ConfigError(f"config {name} needs {wanted} (or the environment variable(s) {sorted(missing)})")
    placeholders = {var: "<replaced>" for var in every if var not in needed}
    data = read_config_file(_config_path(name), {**placeholders, **variables})
    data.update({k: spec for k, spec in zip(_MODEL_KEYS, (classifier, diffusion)) if spec is not None})
    run = build_run_config(data)
    candidates = [m for m in run.methods if m.is_diffguard and method in (None, m.name)]
    if len(candidates) != 1:
        names = [m.name for m in run.methods if m.is_diffguard]
        raise ConfigError(f"config {name}: choose one DiffGuard method with method=<name>; it has {names}")
    spec = candidates[0].with_params(values, overrides)
    return build_method(spec, build_classifier(run.classifier), build_backend(run.diffusion))
