"""Export a guard from a benchmark run: exactly the run's method -- models, settings, fitted statistics, fusion
state, threshold -- as a :class:`~diffguard.guard.guard.Guard` (``diffguard export RESULTS_DIR``; ``diffguard score
PATH --from DIR`` exports in memory, then scores). The export reads the run's data (ID-train for fitting methods);
the guard it writes does not.

What a folder written by ``diffguard benchmark`` holds and what is taken from it:

* ``run_config.json``: the benchmark definition, the model specs and every method's spec (one format,
  :mod:`diffguard.specs.method_specs`), so the detector is built by the same builder as in the run;
* ``manifest.json``: the hashes of the model files the run used; a model whose files changed since is refused,
  naming which one;
* ``results.sqlite``: the cached classifier outputs of ID-train (what KNN / ViM / MDS fit on) and every method's
  ID-validation scores, from which the 95 %-TPR threshold and a fusion's band are fitted exactly as the run's
  evaluation did.

The threshold keeps 95 % of the ID-validation images (a method flags a score above it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffguard.detectors.calibration import create_calibration
from diffguard.detectors.detector import classifier_outputs
from diffguard.detectors.fusion import diffguard_input
from diffguard.errors import ConfigError, UserError
from diffguard.evaluation.ood_metrics import auroc
from diffguard.evaluation.stored_calibration import calibrated, fitted_calibration, stored_labels
from diffguard.evaluation.validation_rows import threshold_at_tpr
from diffguard.guard.folder import model_record
from diffguard.guard.guard import Guard
from diffguard.guard.parts import Geometry, Part, detail_columns, val_quantiles
from diffguard.run.manifest import model_hashes
from diffguard.run.plan import select_rows
from diffguard.run.run_config import build_run_config, fusion_title
from diffguard.run.runner import Runner
from diffguard.run.store import ResultStore
from diffguard.specs.method_specs import build_method

FEW_VAL = 100  # fewer ID-val images than this: the threshold is a rough estimate (said when scoring)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path} not found; is {path.parent} a folder written by `diffguard benchmark`?")
    return json.loads(path.read_text())


def load_run(folder: Path, device: str | None = None) -> tuple[Any, Any]:
    """(runner, store) of a results folder; the store is opened read-only in spirit (nothing is written)."""

    data = read_json(folder / "run_config.json")
    if device:
        data["device"] = device
    cfg = build_run_config(data)
    if not (folder / "results.sqlite").is_file():
        raise UserError(f"{folder} has no results.sqlite: the run's cached classifier outputs and validation scores "
                        "are needed to rebuild its methods")
    return Runner(cfg, folder, progress=False), ResultStore(folder / "results.sqlite")


def check_models(runner: Any, folder: Path) -> None:
    """Refuse when a model's files differ from those the run used (naming the model and both hashes)."""

    manifest = read_json(folder / "manifest.json")
    stored = (manifest.get("config") or {}).get("models") or {}
    now = model_hashes(runner.cfg)
    for kind in ("classifier", "diffusion"):
        if kind in stored and stored[kind] != now[kind]:
            raise UserError(f"the {kind} files differ from the ones run {folder} was calibrated with (hash "
                            f"{_short(now[kind])} now, {_short(stored[kind])} in the run): its thresholds do not "
                            "apply; rerun the benchmark with these models")


def _short(hashes: Any) -> str:
    return ",".join(str(h)[:12] for h in (hashes if isinstance(hashes, list) else [hashes]))


def method_names(runner: Any) -> list[str]:
    """Every method of the run, then every fusion (``diffguard+baseline``)."""
    return [m.name for m in runner.cfg.methods] + [f.key for f in runner.cfg.fusion]


def _role_rows(runner: Any, role: str) -> list[tuple[str, np.ndarray]]:
    """(set name, planned ids) of the run's sets of a role."""
    return [(spec.name, runner.sources[spec.name].ids[runner.plan[spec.name]].numpy())
            for spec in runner.spec.by_role(role) if spec.name in runner.sources]


def stored_column(runner: Any, store: Any, method: str, role: str = "val", key: str = "score") -> np.ndarray:
    """A method's stored column ``key`` (its raw score, or e.g. DiffGuard's ``dist:gmsd``) on the run's sets of a
    role (ID-val by default), concatenated; refused when incomplete."""
    rows = _role_rows(runner, role)
    out = np.concatenate([store.scores(method, n, ids, key=key) for n, ids in rows]) if rows else np.empty(0)
    if out.size == 0 or np.isnan(out).any():
        what = "scores" if key == "score" else f"{key!r} values"
        raise UserError(f"method {method!r} has no complete {role} {what} in {runner.out}; finish the run first "
                        "(rerun the same `diffguard benchmark` command)")
    return out


def raw_val_scores(runner: Any, store: Any, method: str, role: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """A method's stored raw scores on the run's sets of a role (ID-val by default), concatenated, and the label
    each was computed for (:func:`~diffguard.evaluation.stored_calibration.stored_labels`)."""

    out = stored_column(runner, store, method, role)
    labels = np.concatenate([stored_labels(store, method, n, ids) for n, ids in _role_rows(runner, role)])
    return out, labels


def method_calibration(runner: Any, store: Any, method: str) -> Any:
    """The method's calibration fitted on its ID-val scores as the run's evaluation fits it (None: raw)."""

    spec = runner.cfg.method(method)
    if spec.calibration is None:
        return None
    return fitted_calibration(spec, *raw_val_scores(runner, store, method))


def val_scores(runner: Any, store: Any, method: str, role: str = "val") -> np.ndarray:
    """A method's scores on the run's sets of a role (ID-val by default), concatenated, calibrated as in the run's
    evaluation when its spec asks for a calibration."""

    raw, labels = raw_val_scores(runner, store, method, role)
    return calibrated(method_calibration(runner, store, method), raw, labels)


def diffguard_val_input(runner: Any, store: Any, fusion: Any, method: str, role: str = "val") -> Any:
    """What a fusion rule takes as DiffGuard's input (:func:`~diffguard.detectors.fusion.diffguard_input`) on the
    run's sets of a role: the method's ``"score"`` as :func:`val_scores` gives it, its stored distance columns raw."""
    columns = {c: val_scores(runner, store, method, role) if c == "score" else
               stored_column(runner, store, method, role, c) for c in fusion.diffguard_columns}
    return diffguard_input(fusion, columns)


def fitted_fusion(runner: Any, store: Any, f: Any) -> Any:
    """The fusion entry ``f``'s rule fitted on the run's ID-val scores, as the run's evaluation fits it."""
    fusion = f.build()
    return fusion.fit(val_scores(runner, store, f.baseline), diffguard_val_input(runner, store, fusion, f.diffguard))


def key_scores(runner: Any, store: Any, key: str, role: str) -> np.ndarray:
    """A method's or a fusion's scores on the run's sets of a role; a fusion is fitted on ID-val, as in the run."""
    fusions = {f.key: f for f in runner.cfg.fusion}
    if key not in fusions:
        return val_scores(runner, store, key, role)
    f = fusions[key]
    fusion = fitted_fusion(runner, store, f)
    return fusion.fuse(val_scores(runner, store, f.baseline, role),
                       diffguard_val_input(runner, store, fusion, f.diffguard, role))


def best_on_validation(runner: Any, store: Any) -> str | None:
    """The method or fusion with the highest AUROC of ID-val against the OOD-validation sets (role ``val_ood``),
    or None when the run has no OOD-validation set."""
    if not any(s.name in runner.sources for s in runner.spec.by_role("val_ood")):
        return None
    best, best_auc = None, -1.0
    for key in method_names(runner):
        try:
            auc = auroc(key_scores(runner, store, key, "val"), key_scores(runner, store, key, "val_ood"))
        except UserError:
            continue
        if auc > best_auc:
            best, best_auc = key, auc
    return best


def default_method(runner: Any, store: Any) -> str | None:
    """The run's ``recommended`` detector when its config names one, else its best on OOD validation."""
    return runner.cfg.recommended or best_on_validation(runner, store)


def export_from_run(runner: Any, store: Any, name: str, folder: Path | None = None) -> Guard:
    """The run's method (or fusion) ``name`` as a guard: fitted statistics, calibrations, fusion, threshold."""
    fusions = {f.key: f for f in runner.cfg.fusion}
    if name not in fusions and name not in {m.name for m in runner.cfg.methods}:
        raise ConfigError(f"run {runner.out} has no method {name!r}; choose one of {method_names(runner)}")
    parts = [fusions[name].baseline, fusions[name].diffguard] if name in fusions else [name]
    built = {}
    for part in parts:
        m = runner.cfg.method(part)
        stored = store.get_meta(f"method:{part}")
        if stored is not None and stored != runner.identity(m):
            raise UserError(f"method {part!r}: run_config.json says {runner.identity(m)} but the results were made "
                            f"with {stored}; the run's thresholds do not apply to the edited settings")
        det = build_method(m, runner.classifier, runner.backend, runner.members)
        if det.needs.fit:
            det.fit(runner.outputs(store, runner.spec.by_role("train")[0].name))
        built[part] = Part(m, det, method_calibration(runner, store, part))
    source = {"run": str(folder or runner.out), "benchmark": runner.spec.name, "method": name}
    if name not in fusions:
        val = val_scores(runner, store, name)
        return _guard(runner, name, runner.cfg.method(name).title, built, val, source=source)
    f = fusions[name]
    fusion = f.build()
    b, d = val_scores(runner, store, f.baseline), diffguard_val_input(runner, store, fusion, f.diffguard)
    return _guard(runner, name, fusion_title(runner.cfg, f), built, fusion.fit(b, d).fuse(b, d), fusion, f, source)


def export_run(folder: str | Path, method: str | None = None, device: str | None = None) -> Guard:
    """The guard of a results folder's ``method`` (default: :func:`default_method`), its models checked first."""
    folder = Path(folder)
    runner, store = load_run(folder, device)
    with store:
        check_models(runner, folder)
        name = method or default_method(runner, store)
        if name is None:
            raise ConfigError(f"run {folder} names no recommended detector and has no OOD-validation set to pick "
                              f"its best method; choose one with --method: {', '.join(method_names(runner))}")
        return export_from_run(runner, store, name, folder)


def _guard(runner: Any, name: str, title: str, parts: dict[str, Part], val: np.ndarray, fusion: Any = None,
           f: Any = None, source: dict[str, Any] | None = None) -> Guard:
    """A guard of built parts whose (fused) ID-val scores are ``val``."""
    spec = runner.spec
    classes = tuple(spec.class_names) or tuple(str(i) for i in range(spec.num_classes))
    models = {"classifier": model_record("classifier", runner.cfg.classifier)}
    if any(p.is_diffguard for p in parts.values()):
        models["diffusion"] = model_record("diffusion", runner.cfg.diffusion)
    return Guard(name=name, title=title, parts=parts, classifier=runner.classifier, threshold=threshold_at_tpr(val),
                 geometry=Geometry(classes, spec.image_size, spec.channels), fusion=fusion,
                 fusion_parts=(f.baseline, f.diffguard) if f is not None else None, val_quantiles=val_quantiles(val),
                 n_val=int(val.size), record={"models": models, "source": source or {},
                                              "fusion_rule": f.rule if f is not None else None,
                                              "normalisation": normalisation(runner.classifier)})


def normalisation(classifier: Any) -> dict[str, Any]:
    """What the classifier adapter does to the guard's [-1, 1] input: ((x + 1) / 2 - mean) / std, resized to its
    resolution (recorded for people; the adapter rebuilt from its spec applies it)."""
    mean, std = getattr(classifier, "mean", None), getattr(classifier, "std", None)
    if mean is None or std is None:
        return {"applied_by": type(classifier).__name__}
    resolution = getattr(classifier, "resolution", None)
    return {"formula": "((x + 1) / 2 - mean) / std", "mean": [float(v) for v in mean.flatten()],
            "std": [float(v) for v in std.flatten()], "resolution": list(resolution) if resolution else None}


def score_batches(fn: Any, x: Tensor, ids: Tensor, batch: int, progress: bool, desc: str,
                  device: torch.device) -> np.ndarray:
    """``fn(x_batch, ids_batch)`` over x (N, C, H, W) in batches on ``device``; results concatenated as float64."""

    out = []
    for i in tqdm(range(0, len(x), batch), desc=desc, unit="batch", disable=not progress, leave=False):
        s = fn(x[i:i + batch].to(device), ids[i:i + batch])
        out.append(s.double().cpu().numpy() if isinstance(s, Tensor) else np.asarray(s, dtype=np.float64))
    return np.concatenate(out) if out else np.empty(0)


def guard_from_config(cfg: Any, name: str, val_limit: int | None, batch_size: int,
                      progress: bool = False) -> tuple[Guard, Any, str]:
    """A method or fusion of a run config as a guard, without a finished run: each detector built and fitted on the
    benchmark's ID-train (when it needs it); its calibration (when its spec names one), a fusion's rule and the
    95 %-TPR threshold fitted on ``val_limit`` seeded ID-val images (None: all), as a run's evaluation fits them.
    ``name``: a method of ``cfg`` or a fusion key of it (``DG+BASELINE``, ``DG+BASELINE:weighted``).
    Returns (guard, runner, description of the threshold)."""
    fusions = {f.key: f for f in cfg.fusion}
    if name not in fusions and "+" in name:
        raise ConfigError(f"{name!r} is not a fusion of this config; its fusions: {sorted(fusions) or 'none'} (add "
                          "a fusion entry, or run `diffguard benchmark` and use --from)")
    runner = Runner(cfg, Path("."), progress=False)
    names = [fusions[name].baseline, fusions[name].diffguard] if name in fusions else [name]
    val = runner.spec.by_role("val")[0].name
    src = runner.sources[val]
    rows = select_rows(len(src), val_limit, 0, val)
    x, ids = src.load(rows), src.ids[rows]
    fusion = fusions[name].build() if name in fusions else None
    wanted = {p: fusion.diffguard_columns if fusion is not None and p == fusions[name].diffguard else ("score",)
              for p in names}
    parts = {p: _fit_part(runner, p) for p in names}
    scores = {p: _calibrate_part(parts[p], runner, x, ids, batch_size, progress, wanted[p]) for p in names}
    source = {"config": cfg.benchmark if isinstance(cfg.benchmark, str) else "inline", "method": name,
              "val": f"{val}, {len(rows)} images"}
    if fusion is None:
        guard = _guard(runner, name, cfg.method(name).title, parts, scores[name]["score"], source=source)
    else:
        f = fusions[name]
        b, d = scores[f.baseline]["score"], diffguard_input(fusion, scores[f.diffguard])
        title = fusion_title(cfg, f)
        guard = _guard(runner, name, title, parts, fusion.fit(b, d).fuse(b, d), fusion, f, source)
    return guard, runner, f"{runner.spec.name} {val}, {len(rows)} images, 95% TPR"


def _fit_part(runner: Any, name: str) -> Part:
    """One detector of a config built (and fitted on the benchmark's ID-train when it fits)."""
    spec = runner.cfg.method(name)
    det = build_method(spec, runner.classifier, runner.backend, runner.members)
    if det.needs.fit:
        src = runner.sources[runner.spec.by_role("train")[0].name]
        train = src.load(np.arange(len(src))).to(runner.device)
        det.fit(classifier_outputs(runner.classifier, train, labels=src.labels.to(runner.device), batch_size=256))
    return Part(spec, det)


def _calibrate_part(part: Part, runner: Any, x: Tensor, ids: Tensor, batch_size: int, progress: bool,
                    columns: Sequence[str] = ("score",)) -> dict[str, np.ndarray]:
    """The part's columns {name: (N,)} of ID-val images x (N, C, H, W): ``"score"`` (calibrated when its spec
    names a calibration, which is fitted here) and any other ``columns`` a fusion reads (DiffGuard's raw
    ``dist:<name>``)."""
    det, name = part.detector, part.spec.name
    cal = create_calibration(part.spec.calibration)
    extra = [c for c in columns if c != "score"]
    if cal is None and not extra:
        score = score_batches(det.score_images, x, ids, batch_size, progress, f"calibrating {name}", runner.device)
        return {"score": score}
    keys = ["score", "label", *extra]

    def columns_of(xb: Tensor, ib: Tensor) -> np.ndarray:
        """(B, len(keys)) of one batch: the detector runs once per batch."""
        cols = detail_columns(det, runner.classifier, xb, ib, extra)
        return np.stack([cols[k] for k in keys], 1)

    stacked = score_batches(columns_of, x, ids, batch_size, progress, f"calibrating {name}",
                            runner.device).reshape(-1, len(keys))
    out = {k: stacked[:, i] for i, k in enumerate(keys)}
    labels = out.pop("label").astype(np.int64)
    if cal is not None:
        part.calibration = cal.fit(out["score"], labels)
        out["score"] = part.calibration(out["score"], labels)
    return out
