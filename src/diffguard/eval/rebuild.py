"""Rebuild exactly the method of a benchmark run -- models, settings, fitted statistics, fusion state, threshold --
from its results folder, to score new images (``diffguard score PATH --from DIR``).

What a folder written by ``diffguard benchmark`` holds and what is taken from it:

* ``run_config.json``: the benchmark definition, the model specs and every method's spec (one format,
  :mod:`diffguard.specs.methods`), so the detector is built by the same builder as in the run;
* ``manifest.json``: the hashes of the model files the run used; a model whose files changed since is refused,
  naming which one;
* ``results.sqlite``: the cached classifier outputs of ID-train (what KNN / ViM / MDS fit on) and every method's
  ID-validation scores, from which the 95 %-TPR threshold and a fusion's band are fitted exactly as the run's
  evaluation did.

The threshold keeps 95 % of the ID-validation images (a method flags a score above it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffguard.errors import ConfigError, UserError

TPR = 0.95
FEW_VAL = 100


@dataclass
class RebuiltMethod:
    """A run's method ready to score images: one detector, or a baseline and a DiffGuard method fused.

    ``threshold``: flag a score above it (95 % of the run's ID-val scores are at or below it); ``n_val``: how many
    ID-val images it rests on.
    """

    name: str
    title: str
    detectors: dict[str, Any]
    threshold: float
    n_val: int
    fusion: Any = None
    fusion_parts: tuple[str, str] | None = None

    def score_images(self, x: Tensor, ids: Tensor) -> np.ndarray:
        """(B,) float64 scores of images x (B, C, H, W) in [-1, 1]; ids (B,) seed per-sample randomness."""
        scores = {n: d.score_images(x, ids).double().cpu().numpy() for n, d in self.detectors.items()}
        if self.fusion is None:
            return next(iter(scores.values()))
        baseline, diffguard = self.fusion_parts  # type: ignore[misc]
        return self.fusion.fuse(scores[baseline], scores[diffguard])


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path} not found; is {path.parent} a folder written by `diffguard benchmark`?")
    return json.loads(path.read_text())


def load_run(folder: Path, device: str | None = None) -> tuple[Any, Any]:
    """(runner, store) of a results folder; the store is opened read-only in spirit (nothing is written)."""
    from diffguard.eval.run_config import build_run_config
    from diffguard.eval.runner import Runner
    from diffguard.eval.store import ResultStore

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
    from diffguard.eval.manifest import model_hashes

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
    return [m.name for m in runner.cfg.methods] + [f"{f.diffguard}+{f.baseline}" for f in runner.cfg.fusion]


def val_scores(runner: Any, store: Any, method: str, role: str = "val") -> np.ndarray:
    """A method's stored scores on the run's sets of a role (ID-val by default), concatenated."""
    parts = []
    for spec in runner.spec.by_role(role):
        if spec.name not in runner.sources:
            continue
        ids = runner.sources[spec.name].ids[runner.plan[spec.name]].numpy()
        parts.append(store.scores(method, spec.name, ids))
    out = np.concatenate(parts) if parts else np.empty(0)
    if out.size == 0 or np.isnan(out).any():
        raise UserError(f"method {method!r} has no complete {role} scores in {runner.out}; finish the run first "
                        "(rerun the same `diffguard benchmark` command)")
    return out


def best_on_validation(runner: Any, store: Any) -> str | None:
    """The method with the highest AUROC of ID-val against the OOD-validation sets (role ``val_ood``), or None when
    the run has no OOD-validation set."""
    from diffguard.eval.metrics import auroc

    if not any(s.name in runner.sources for s in runner.spec.by_role("val_ood")):
        return None
    best, best_auc = None, -1.0
    for m in runner.cfg.methods:
        try:
            auc = auroc(val_scores(runner, store, m.name), val_scores(runner, store, m.name, "val_ood"))
        except UserError:
            continue
        if auc > best_auc:
            best, best_auc = m.name, auc
    return best


def rebuild(runner: Any, store: Any, name: str) -> RebuiltMethod:
    """The run's method (or fusion) ``name`` with its fitted statistics and 95 %-TPR threshold."""
    from diffguard.specs.methods import build_method

    fusions = {f"{f.diffguard}+{f.baseline}": f for f in runner.cfg.fusion}
    if name not in fusions and name not in {m.name for m in runner.cfg.methods}:
        raise ConfigError(f"run {runner.out} has no method {name!r}; choose one of {method_names(runner)}")
    parts = [fusions[name].baseline, fusions[name].diffguard] if name in fusions else [name]
    detectors = {}
    for part in parts:
        m = runner.cfg.method(part)
        stored = store.get_meta(f"method:{part}")
        if stored is not None and stored != runner.identity(m):
            raise UserError(f"method {part!r}: run_config.json says {runner.identity(m)} but the results were made "
                            f"with {stored}; the run's thresholds do not apply to the edited settings")
        det = build_method(m, runner.classifier, runner.backend, runner.members)
        if det.needs.fit:
            det.fit(runner.outputs(store, runner.spec.by_role("train")[0].name))
        detectors[part] = det
    if name not in fusions:
        val = val_scores(runner, store, name)
        return RebuiltMethod(name, runner.cfg.method(name).title, detectors, _threshold(val), val.size)
    return _rebuild_fusion(runner, store, name, fusions[name], detectors)


def _rebuild_fusion(runner: Any, store: Any, name: str, f: Any, detectors: dict[str, Any]) -> RebuiltMethod:
    from diffguard.detectors.fusion import BandFusion

    b, d = val_scores(runner, store, f.baseline), val_scores(runner, store, f.diffguard)
    fusion = BandFusion(f.low_q, f.high_q).fit(b, d)
    title = f"{runner.cfg.method(f.diffguard).title} + {runner.cfg.method(f.baseline).title}"
    return RebuiltMethod(name, title, detectors, _threshold(fusion.fuse(b, d)), b.size, fusion,
                         (f.baseline, f.diffguard))


def _threshold(val: np.ndarray) -> float:
    return float(np.quantile(val, TPR))


def to_tensor_ids(n: int) -> Tensor:
    return torch.arange(n, dtype=torch.long)
