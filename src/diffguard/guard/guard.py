"""The guard: a fitted detector (one method, or a baseline and DiffGuard fused) with its threshold, ready to score.

    guard = Guard.load("guards/fmnist6")            # a folder written by `diffguard export` or Guard.save
    result = guard.score(x)                         # x: (N, C, H, W) float32 in [-1, 1]
    result.score, result.is_ood, result.label       # (N,) float64, bool, int64; result.threshold

**Cascade.** With the band fusion rule (:class:`~diffguard.detectors.fusion.BandFusion`) the baseline's score
alone puts an image in a tier: confidently ID, confidently OOD, or the hard case in between. Only hard cases need
DiffGuard (the fused score of the other tiers does not read it), so DiffGuard runs on those images only;
``result.diffguard_ran`` says which (the veto rules: the band and the confident-OOD tier up to the veto cap, which
DiffGuard may veto).
Scores and decisions are those of computing DiffGuard for every image. DiffGuard's part yields the columns the rule
reads (``fusion.diffguard_columns``: its score, or for veto-split e.g. ``dist:gmsd`` and ``dist:logits_l1``);
``result.parts`` keeps its score.

Parts are built by the one builder (:func:`~diffguard.specs.method_specs.build_method`) from their method specs;
saving and loading live in :mod:`diffguard.guard.folder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from diffguard.detectors.fusion import BandFusion, WeightedSumFusion, diffguard_input
from diffguard.errors import UserError
from diffguard.evaluation.validation_rows import TPR
from diffguard.guard.folder import load_fields, save_guard
from diffguard.guard.inputs import decode_images, read_files
from diffguard.guard.parts import Geometry, GuardResult, Part, detail_columns, raw_and_labels


def rule_cascades(rule: Any) -> bool:
    """True for a fusion rule whose fused score reads DiffGuard only on some images (band and veto rules), so a
    guard runs DiffGuard on those only; False for the weighted sum (every image) and for no fusion."""
    return isinstance(rule, BandFusion)


@dataclass
class Guard:
    """A fitted detector and its operating point (see the module docstring).

    Args:
        name: the method key of the run (e.g. ``"diffguard-tuned+vim-tuned"``).
        title: the display name.
        parts: the detectors by method name (one, or a baseline and a DiffGuard method).
        classifier: the protected classifier (its predicted label is reported).
        threshold: flag a score above it (``tpr`` of the ID-val scores are at or below it).
        geometry: the input the guard takes.
        fusion: the fitted fusion rule of a two-part guard, with ``fusion_parts`` = (baseline, diffguard).
        val_quantiles: quantiles of the ID-val scores (``{"0.95": ...}``), to choose another operating point.
        n_val: how many ID-val images the threshold rests on.
        record: what the guard's folder records beyond the above (model specs and hashes, versions, source).
    """

    name: str
    title: str
    parts: dict[str, Part]
    classifier: Any
    threshold: float
    geometry: Geometry
    fusion: BandFusion | WeightedSumFusion | None = None
    fusion_parts: tuple[str, str] | None = None
    val_quantiles: dict[str, float] = field(default_factory=dict)
    n_val: int = 0
    tpr: float = TPR
    batch_size: int = 32
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.geometry.channels, self.geometry.size, self.geometry.size)

    @property
    def device(self) -> torch.device:
        return next(self.classifier.parameters()).device

    @property
    def cascades(self) -> bool:
        """True when DiffGuard runs only where the fused score reads it (band and veto rules)."""
        return rule_cascades(self.fusion)

    def threshold_at(self, tpr: float) -> float:
        """The threshold that keeps ``tpr`` of ID-val (one of the stored quantiles)."""
        key = f"{tpr:g}"
        if key not in self.val_quantiles:
            raise UserError(f"no stored ID-val quantile {key}; stored: {sorted(self.val_quantiles)}")
        return float(self.val_quantiles[key])

    # -- folder -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path, copy_models: bool = False) -> Path:
        """Write the guard folder (:mod:`diffguard.guard.folder`); ``copy_models`` copies the model files into it."""
        return save_guard(self, path, copy_models)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Guard:
        """The guard of a folder written by :meth:`save` or ``diffguard export``, on ``device``."""
        return cls(**load_fields(path, device))

    # -- scoring ------------------------------------------------------------------------------------------------
    def score(self, x: Tensor, ids: Tensor | None = None) -> GuardResult:
        """Score images x (N, C, H, W) in [-1, 1]; ``ids`` (N,) seed per-sample randomness (default 0..N-1)."""
        self.geometry.check(x)
        ids = torch.arange(x.shape[0]) if ids is None else ids.long().cpu()
        x = x.float()
        label = self._labels(x)
        n = x.shape[0]
        ran = np.zeros(n, dtype=bool)
        if self.fusion is None:
            part = next(iter(self.parts.values()))
            score = self.part_scores(part, x, ids)
            ran[:] = part.is_diffguard and n > 0
            return self._result(score, label, {part.spec.name: score}, ran)
        baseline, diffguard = self.fusion_parts  # type: ignore[misc]
        b = self.part_scores(self.parts[baseline], x, ids)
        need = self.fusion.needs_diffguard(b) if self.cascades and n else np.ones(n, dtype=bool)
        columns = tuple(dict.fromkeys(("score", *self.fusion.diffguard_columns)))
        d = {c: np.full(n, np.nan) for c in columns}
        if need.any():
            sel = torch.from_numpy(np.flatnonzero(need))
            got = self.part_columns(self.parts[diffguard], x[sel], ids[sel], columns)
            for c in columns:
                d[c][need] = got[c]
        ran[:] = need
        filled = {c: np.where(need, v, 0.0) for c, v in d.items()}
        score = self.fusion.fuse(b, diffguard_input(self.fusion, filled)) if n else np.empty(0)
        return self._result(score, label, {baseline: b, diffguard: d["score"]}, ran)

    def score_files(self, files: list[str | Path]) -> list[dict[str, Any]]:
        """Score image files; one row per file, in order: ``path``, ``status`` ("ok" / "skipped"), ``score``,
        ``is_ood``, ``label``, ``diffguard_ran``, each part's ``score_<name>``, ``resized`` (the original "WxH" of a
        file of another size, else "") and ``reason`` (why a file was skipped)."""
        batch = read_files([Path(f) for f in files], self.geometry)
        scored = self.score(batch.images, torch.arange(len(batch.ok))).rows() if batch.ok else []
        by_index = dict(zip(batch.ok, scored))
        rows = []
        for i, f in enumerate(files):
            row: dict[str, Any] = {"path": str(f), "status": "ok" if i in by_index else "skipped"}
            row.update(by_index.get(i, {}))
            rows.append({**row, "resized": batch.resized.get(i, ""), "reason": batch.skipped.get(i, "")})
        return rows

    def decode_images(self, blobs: list[bytes]) -> Tensor:
        """Encoded image files (bytes) -> (N, C, H, W) in [-1, 1] at the guard's geometry."""
        return decode_images(blobs, self.geometry)

    def _result(self, score: np.ndarray, label: np.ndarray, parts: dict[str, np.ndarray],
                ran: np.ndarray) -> GuardResult:
        score = np.asarray(score, dtype=np.float64)
        return GuardResult(score, score > self.threshold, label, parts, ran, self.threshold)

    def _labels(self, x: Tensor) -> np.ndarray:
        with torch.no_grad():
            out = [self.classifier.logits(b.to(self.device)).argmax(1).cpu() for b in x.split(256)]
        return torch.cat(out).numpy().astype(np.int64) if out else np.empty(0, dtype=np.int64)

    def part_scores(self, part: Part, x: Tensor, ids: Tensor) -> np.ndarray:
        """(N,) float64 scores of one part over batches, calibrated when its spec asks for it."""
        out = [self._batch(part, x[i:i + self.batch_size].to(self.device), ids[i:i + self.batch_size])
               for i in range(0, x.shape[0], self.batch_size)]
        return np.concatenate(out) if out else np.empty(0)

    def part_columns(self, part: Part, x: Tensor, ids: Tensor,
                     columns: Sequence[str] = ("score",)) -> dict[str, np.ndarray]:
        """{column: (N,) float64} of one part over batches: ``"score"`` as :meth:`part_scores` gives it, any other
        column (DiffGuard's ``dist:<name>``, which a fusion rule may read) raw from the detector's ``details``."""
        extra = [c for c in columns if c != "score"]
        if not extra:
            return {"score": self.part_scores(part, x, ids)} if "score" in columns else {}
        out: dict[str, list[np.ndarray]] = {}
        for i in range(0, x.shape[0], self.batch_size):
            xb, ib = x[i:i + self.batch_size].to(self.device), ids[i:i + self.batch_size]
            cols = detail_columns(part.detector, self.classifier, xb, ib, extra)
            label = cols.pop("label").astype(np.int64)
            if part.calibration is not None:
                cols["score"] = part.calibration(cols["score"], label)
            for c in columns:
                out.setdefault(c, []).append(cols[c])
        return {c: np.concatenate(out[c]) if out else np.empty(0) for c in columns}

    def _batch(self, part: Part, x: Tensor, ids: Tensor) -> np.ndarray:
        if part.calibration is None:
            return part.detector.score_images(x, ids).double().cpu().numpy()
        raw, label = raw_and_labels(part.detector, self.classifier, x, ids)
        return part.calibration(raw, label)
