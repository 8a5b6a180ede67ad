"""A guard's folder: ``guard.json`` (human-readable, everything but arrays) and ``state.safetensors`` (the fitted
arrays: MDS means and precision, ViM basis, KNN bank, ...). No pickle anywhere.

``guard.json`` holds: the format version, the versions of diffguard and torch that wrote it, the method key and
title, each part's method spec and its settings fully resolved (a DiffGuard preset's values with the overrides
applied, written out), its calibration table, the fusion rule with its fitted constants, the threshold with the TPR
it keeps on ID-val and the ID-val score quantiles (another operating point without the data), the input geometry
(classes, size, channels, range), and the model specs with a content hash of every model file.

Loading rebuilds every part with the one builder from its spec, refuses a model whose files changed since export
(naming the file), and warns when the guard was written by another diffguard version or when a part's resolved
settings differ from what this version resolves from the same spec. ``--copy-models`` copies the model files into
``models/`` so the folder moves to another machine as one piece.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from diffguard.detectors.diffguard_presets import resolve_preset
from diffguard.devices import resolve_device, to_device
from diffguard.errors import UserError
from diffguard.guard.parts import Geometry, Part
from diffguard.guard.state import (
    calibration_state,
    describe,
    detector_state,
    fusion_state,
    restore_calibration,
    restore_detector,
    restore_fusion,
)
from diffguard.model_files import shipped_path
from diffguard.run.manifest import sha256_files
from diffguard.specs.method_specs import MethodConfig, build_method
from diffguard.specs.model_specs import build_backend, build_classifier, spec_files
from diffguard.version import __version__

FORMAT = 1
CONFIG_FILE = "guard.json"
STATE_FILE = "state.safetensors"
MODEL_KINDS = {"classifier": "classifier", "diffusion": "diffusion"}


def resolved_settings(spec: MethodConfig) -> Any:
    """A part's settings written out: DiffGuard's preset values with its options and overrides applied, else the
    detector's constructor parameters."""
    if spec.is_diffguard:
        params = dict(spec.params)
        preset = params.pop("preset", "fmnist6-cfg")
        overrides = params.pop("overrides", [])
        return {"preset": preset, **describe(resolve_preset(preset, overrides, **params))}
    return describe(spec.params)


def model_record(kind: str, spec: Any) -> dict[str, Any]:
    """``{"spec", "paths", "files": [{"path", "sha256"}]}`` of a model spec (``kind``: classifier or diffusion):
    the files and folders it reads, and a hash of every weight and config file in them."""
    paths = [Path(p).resolve() for p in spec_files(spec, shipped_path(kind))]
    files = [f for p in paths for f in (_model_files(p) if p.is_dir() else [p])]
    return {"spec": spec, "paths": [str(p) for p in paths],
            "files": [{"path": str(f), "sha256": sha256_files([f])} for f in files]}


def _model_files(folder: Path) -> list[Path]:
    """The weight and config files of a model folder (what its hash covers in a run's manifest)."""
    return sorted(p for pat in ("*.safetensors", "*.json") for p in folder.rglob(pat) if p.name != "MODEL_CARD.md")


def save_guard(guard: Any, path: str | Path, copy_models: bool = False) -> Path:
    """Write ``guard`` to folder ``path`` (created; an existing guard there is replaced). Returns the folder."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    parts = []
    for name, part in guard.parts.items():
        t, values = detector_state(name, part.detector) if part.spec.needs.fit else ({}, {})
        tensors.update(t)
        parts.append({"name": name, "spec": part.spec.as_dict(), "settings": resolved_settings(part.spec),
                      "fitted": values, "calibration": calibration_state(part.calibration)})
    models = dict(guard.record.get("models", {}))
    if copy_models:
        models = {kind: _copy_model(out, kind, rec) for kind, rec in models.items()}
    config = {"format": FORMAT, "versions": {"diffguard": __version__, "torch": torch.__version__},
              "name": guard.name, "title": guard.title, "parts": parts,
              "fusion": None if guard.fusion is None else {**fusion_state(guard.record["fusion_rule"], guard.fusion),
                                                           "baseline": guard.fusion_parts[0],
                                                           "diffguard": guard.fusion_parts[1]},
              "threshold": {"value": guard.threshold, "tpr": guard.tpr, "n_val": guard.n_val,
                            "val_quantiles": guard.val_quantiles},
              "input": {"classes": list(guard.geometry.classes), "size": guard.geometry.size,
                        "channels": guard.geometry.channels, "range": [-1.0, 1.0], "layout": "N, C, H, W float32",
                        "normalisation": guard.record.get("normalisation")
                        or "the classifier adapter applies its own (see models.classifier.spec)"},
              "models": models, "source": guard.record.get("source", {})}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(out / STATE_FILE))
    return out


def _copy_model(out: Path, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """Copy a model's files under ``out/models/<kind>/`` and point its spec there (paths relative to ``out``)."""
    dest = out / "models" / kind
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    moved = {}
    for path in map(Path, record["paths"]):
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, dest / path.name)
        moved[str(path)] = f"models/{kind}/{path.name}"
    files = []
    for f in record["files"]:
        old = next(p for p in moved if f["path"] == p or f["path"].startswith(p + "/"))
        files.append({"path": moved[old] + f["path"][len(old):], "sha256": f["sha256"]})
    return {"spec": _relocate(record["spec"], moved, kind), "paths": list(moved.values()), "files": files}


def _relocate(spec: Any, moved: dict[str, str], kind: str) -> Any:
    """The spec with every path it names replaced by its copy."""
    if spec is None or isinstance(spec, str):
        old = str(spec_files(spec, shipped_path(kind))[0].resolve())
        return moved.get(old, spec)
    out = dict(spec)
    for key, value in spec.items():
        if key != "type" and isinstance(value, str):
            found = spec_files({"type": spec.get("type"), key: value}, shipped_path(kind))
            out[key] = moved.get(str(Path(found[0]).resolve()), value) if found else value
    return out


def _absolute(spec: Any, root: Path) -> Any:
    """Paths under ``models/`` made absolute against the guard folder."""
    if isinstance(spec, str):
        return str(root / spec) if spec.startswith("models/") else spec
    if isinstance(spec, dict):
        return {k: _absolute(v, root) for k, v in spec.items()}
    return spec


def check_model_files(config: dict[str, Any], root: Path) -> None:
    """Refuse a guard whose model files changed since export, naming the file and what to do."""
    for kind, record in config.get("models", {}).items():
        for f in record.get("files", []):
            path = Path(_absolute(f["path"], root))
            if not path.exists():
                raise UserError(f"guard {root}: the {kind} file {path} is missing; restore it, or export the guard "
                                "again with --copy-models so it carries its models")
            now = sha256_files([path])
            if now != f["sha256"]:
                raise UserError(f"guard {root}: the {kind} file {path} changed since export (sha256 {now[:12]}, "
                                f"exported with {f['sha256'][:12]}); its threshold does not apply: restore the file "
                                "or export the guard again from a run with this model")


def load_fields(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The constructor arguments of the :class:`~diffguard.guard.guard.Guard` saved in folder ``path``."""
    root = Path(path)
    config = read_config(root)
    check_model_files(config, root)
    dev = resolve_device(str(device))
    models = config.get("models", {})
    classifier = to_device(build_classifier(_absolute(models["classifier"]["spec"], root)), dev)
    specs = [MethodConfig.from_dict(p["spec"]) for p in config["parts"]]
    backend = (to_device(build_backend(_absolute(models["diffusion"]["spec"], root)), dev)
               if any(s.needs.backend for s in specs) else None)
    tensors = load_file(str(root / STATE_FILE)) if (root / STATE_FILE).is_file() else {}
    parts = {s.name: _load_part(s, p, classifier, backend, tensors, dev) for s, p in zip(specs, config["parts"])}
    fusion = config.get("fusion")
    inp, thr = config["input"], config["threshold"]
    return dict(name=config["name"], title=config["title"], parts=parts, classifier=classifier,
                 threshold=float(thr["value"]), geometry=Geometry(tuple(inp["classes"]), int(inp["size"]),
                                                                  int(inp["channels"])),
                 fusion=restore_fusion(fusion) if fusion else None,
                 fusion_parts=(fusion["baseline"], fusion["diffguard"]) if fusion else None,
                 val_quantiles=dict(thr.get("val_quantiles", {})), n_val=int(thr.get("n_val", 0)),
                 tpr=float(thr.get("tpr", 0.95)),
                 record={"models": models, "source": config.get("source", {}),
                         "normalisation": config["input"].get("normalisation"),
                         "fusion_rule": fusion["rule"] if fusion else None})


def read_config(root: Path) -> dict[str, Any]:
    """``guard.json`` of a guard folder, checked for its format; another diffguard version gives a warning."""
    file = root / CONFIG_FILE
    if not file.is_file():
        raise UserError(f"{root} is not a guard folder (no {CONFIG_FILE}); write one with `diffguard export "
                        "RESULTS_DIR --out GUARD_DIR`")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{file} is not valid JSON ({err}); export the guard again") from None
    if config.get("format") != FORMAT:
        raise UserError(f"{file} has guard format {config.get('format')!r}; this diffguard reads format {FORMAT}")
    written = config.get("versions", {}).get("diffguard")
    if written != __version__:
        warnings.warn(f"guard {root} was written by diffguard {written}, this is {__version__}: check its scores "
                      "on a few known images", stacklevel=2)
    return config


def _load_part(spec: MethodConfig, saved: dict[str, Any], classifier: Any, backend: Any,
               tensors: dict[str, torch.Tensor], device: torch.device) -> Part:
    detector = to_device(build_method(spec, classifier, backend), device)
    if spec.needs.fit:
        restore_detector(spec.name, detector, tensors, saved.get("fitted", {}), device)
    if resolved_settings(spec) != saved.get("settings"):
        warnings.warn(f"part {spec.name!r}: this diffguard resolves its spec to other settings than the exported "
                      "ones (a preset changed?); its threshold may not apply", stacklevel=3)
    return Part(spec, detector, restore_calibration(spec.calibration, saved.get("calibration")))
