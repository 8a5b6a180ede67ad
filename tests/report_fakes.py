"""Synthetic inputs for the report tests: a score table (1 ID + 2 OOD sets, 3 methods), metric rows, galleries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffguard.report.gallery import GalleryItem, pick_extremes, to_uint8
from diffguard.report.html_report import write_report
from diffguard.report.tables import ScoreTable

SETS = {"test": ("id", 40), "near-fmnist": ("near", 25), "far-digits": ("far", 15)}
METHODS = ["MSP", "Energy", "DiffGuard"]


def fake_table(seed: int = 0) -> ScoreTable:
    """Random scores, OOD shifted up; DiffGuard has NaN on its first 4 rows (not scored)."""
    rng = np.random.default_rng(seed)
    names = np.concatenate([[name] * n for name, (_, n) in SETS.items()])
    ood = names != "test"
    scores = {m: rng.normal(size=names.size) + shift * ood for m, shift in zip(METHODS, (1.0, 0.5, 2.0))}
    scores["DiffGuard"][:4] = np.nan
    return ScoreTable(
        set_names=names, roles={name: role for name, (role, _) in SETS.items()},
        ids=np.concatenate([np.arange(n) for _, n in SETS.values()]).astype(np.int64),
        labels=np.where(ood, -1, rng.integers(0, 6, names.size)).astype(np.int64),
        predictions=rng.integers(0, 6, names.size).astype(np.int64), scores=scores)


def fake_metrics() -> list[dict[str, Any]]:
    """One row per (method, OOD set), values are made up."""
    rows = []
    for i, method in enumerate(METHODS):
        for j, (name, (role, _)) in enumerate(list(SETS.items())[1:]):
            rows.append({"method": method, "set": name, "group": role, "AUROC": 0.7 + 0.05 * i + 0.01 * j,
                         "FPR@95 (OOD-pos, v1.5)": 0.5 - 0.1 * i, "FPR@95 (ID-pos, paper)": 0.6 - 0.1 * i,
                         "AUPR-IN": 0.8, "AUPR-OUT": 0.75, "ACC": 0.93})
    return rows


def fake_galleries(table: ScoreTable, k: int = 3) -> dict[str, list[GalleryItem]]:
    """Most / least OOD DiffGuard galleries per OOD set with random 28x28 grey images."""
    gen = torch.Generator().manual_seed(0)
    galleries = {}
    for name in table.sets():
        if table.roles[name] == "id":
            continue
        rows = table.rows_of(name)
        for kind, ids in zip(("most", "least"), pick_extremes(table, "DiffGuard", name, k)):
            images = to_uint8(torch.rand(2 * len(ids), 1, 28, 28, generator=gen) * 2 - 1)
            items = []
            for n, id_ in enumerate(ids):
                row = rows[table.ids[rows] == id_][0]
                items.append(GalleryItem(name, int(id_), float(table.scores["DiffGuard"][row]), images[2 * n],
                                         images[2 * n + 1], label=-1, prediction=int(table.predictions[row])))
            galleries[f"DiffGuard / {name}, {kind} OOD"] = items
    return galleries


def fake_report(out_dir: Path, title: str = "diffguard report: fake <run> & co",
                meta: dict[str, Any] | None = None) -> Path:
    table = fake_table()
    meta = {"command": "diffguard eval --bench fmnist6 --k 3", "machine": "test box <cpu>", "wall time": "1.2 s",
            "seeds": [0, 1]} if meta is None else meta
    return write_report(out_dir, title=title, metrics=fake_metrics(), table=table, methods=METHODS,
                        galleries=fake_galleries(table), meta=meta)
