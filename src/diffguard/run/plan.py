"""The row plan of a benchmark run: which rows of each set are scored, and how they are cut into batches.

The plan (``RunConfig.plan_key``) is part of a results store's manifest, so a store is only resumed under the same
plan.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np

from diffguard.bench.definitions import VALIDATION_ROLES, BenchmarkSpec
from diffguard.bench.image_sources import ImageSource

if TYPE_CHECKING:
    from diffguard.run.run_config import RunConfig


def select_rows(n: int, limit: int | None, seed: int, set_name: str) -> np.ndarray:
    """Sorted row indices: all ``n``, or ``limit`` of them drawn with a generator seeded by (seed, set name)."""
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, zlib.crc32(set_name.encode())])
    return np.sort(rng.choice(n, size=limit, replace=False))


def is_validation(role: str) -> bool:
    """Whether a set of this role is validation data: roles ``val``, ``val_ood`` and ``val_csid``
    (:data:`~diffguard.bench.definitions.VALIDATION_ROLES`). The role alone decides, never the set's name: a ``csid``
    set is test data whatever it is called. The tuner uses the same rule."""
    return role in VALIDATION_ROLES


def legacy_csid_names(spec: BenchmarkSpec) -> list[str]:
    """The ``csid`` sets named ``val...``: validation data under the old name rule, test data now."""
    return [s.name for s in spec.by_role("csid") if s.name.startswith("val")]


def legacy_csid_warning(name: str) -> str:
    """The one-line notice for a ``csid`` set named ``val...`` (see :func:`legacy_csid_names`)."""
    return (f"set {name!r} has role 'csid' and is treated as TEST data (its name no longer makes it validation data); "
            "if it is validation data, give it 'role: val_csid'")


def row_plan(spec: BenchmarkSpec, sources: dict[str, ImageSource], cfg: RunConfig) -> dict[str, np.ndarray]:
    """Rows per set: ``train_limit`` of train (fits), ``val_limit`` of each validation set (roles val, val_ood,
    val_csid, see :func:`is_validation`), ``limit`` of the test sets (ID, csid, near and far OOD)."""
    plan = {}
    for name, src in sources.items():
        role = spec.get(name).role
        limit = cfg.train_limit if role == "train" else cfg.val_limit if is_validation(role) else cfg.limit
        plan[name] = select_rows(len(src), limit, cfg.limit_seed, name)
    return plan


def batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]
