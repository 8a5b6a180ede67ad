"""Scale-out of the benchmark runner over ``torch.distributed`` processes (``torchrun``).

Work is sharded by batch: batch ``b`` of every (method, set) belongs to rank ``b % world_size``. The batch
partition is the single-process one, so each sample is computed exactly as in a single-process run and nothing is
padded or duplicated. Each rank writes its own store ``results.rank{r}.sqlite`` (one SQLite file per process, safe
on a shared filesystem); rank 0 merges them into ``results.sqlite`` at the end. The processes only synchronise at
barriers; no tensor is communicated.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from diffguard.eval.store import ResultStore, StoreError

# Ranks wait at barriers for the slowest one; an image-level method can keep a rank busy for many hours.
BARRIER_TIMEOUT = datetime.timedelta(days=7)
# Tables copied by a merge; ``meta`` is handled separately (manifest check, method identities).
DATA_TABLES = ("samples", "outputs", "scores", "images", "batches")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` in ``[0, world_size)``; ``world_size == 1`` is a plain run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, batch: int) -> bool:
        """Whether batch ``batch`` (of any method and set) is this rank's work."""
        return batch % self.world_size == self.rank

    def store_path(self, out: Path) -> Path:
        """The store this process writes: ``results.sqlite`` alone, ``results.rank{r}.sqlite`` in a group."""
        return out / (f"results.rank{self.rank}.sqlite" if self.active else "results.sqlite")


def dist_from_env() -> Dist:
    """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` as set by ``torchrun`` (absent: a single process)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({err}); launch with torchrun") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"invalid RANK={rank} for WORLD_SIZE={world}")
    return Dist(rank, world, local)


def init_group(d: Dist) -> None:
    """Join the process group (env:// rendezvous): NCCL when CUDA is present, else gloo. No-op for one process."""
    import torch
    import torch.distributed as tdist

    if not d.active or tdist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(d.local_rank)
    tdist.init_process_group(backend, init_method="env://", timeout=BARRIER_TIMEOUT)


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op for one process)."""
    import torch.distributed as tdist

    if not d.active:
        return
    if tdist.get_backend() == "nccl":
        tdist.barrier(device_ids=[d.local_rank])
    else:
        tdist.barrier()


def finish_group(d: Dist) -> None:
    import torch.distributed as tdist

    if d.active and tdist.is_initialized():
        tdist.destroy_process_group()


def _config_diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def import_classifier_rows(target: ResultStore, sources: Iterable[Path]) -> None:
    """Copy the classifier pass (samples, outputs, their batch markers) of other rank stores into ``target``."""
    for src in sources:
        if Path(src).resolve() == target.path.resolve():
            continue
        _attach_copy(target, Path(src), {"samples": "", "outputs": "",
                                         "batches": "WHERE method = 'classifier'"})


def merge_stores(target: ResultStore, sources: Iterable[Path]) -> None:
    """Merge whole result stores into ``target`` (its manifest must be set).

    Every source must hold the same manifest ``config`` as ``target`` and the same configuration for each method
    they share; otherwise :class:`StoreError` names the differing keys and nothing of that source is copied.
    Rows are keyed by (method, set, id[, key]) and computed deterministically, so a merge is idempotent.
    """
    mine = (target.get_meta("manifest") or {}).get("config", {})
    for src in sources:
        src = Path(src)
        if src.resolve() == target.path.resolve():
            continue
        if not src.is_file():
            raise StoreError(f"cannot merge {src}: no such results file")
        con = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60)
        try:
            meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
        finally:
            con.close()
        theirs = (meta.get("manifest") or {}).get("config", {})
        if theirs != mine:
            raise StoreError(f"cannot merge {src} into {target.path}: different configuration (differs in: "
                             f"{_config_diff(mine, theirs)})")
        for key, ident in meta.items():
            if key.startswith("method:"):
                old = target.get_meta(key)
                if old is not None and old != ident:
                    raise StoreError(f"cannot merge {src} into {target.path}: method {key[7:]!r} was run with "
                                     f"another configuration (differs in: {_config_diff(old, ident)})")
        for key, ident in meta.items():
            if key.startswith("method:"):
                target.set_meta(key, ident)
        _attach_copy(target, src, {t: "" for t in DATA_TABLES})


def _attach_copy(target: ResultStore, src: Path, tables: dict[str, str]) -> None:
    """``INSERT OR REPLACE`` the rows of ``tables`` (name -> WHERE clause) from ``src`` in one transaction."""
    if not src.is_file():
        raise StoreError(f"cannot merge {src}: no such results file (did every rank start?)")
    db = target.db
    db.execute("ATTACH DATABASE ? AS other", (str(src),))
    try:
        with db:
            for table, where in tables.items():
                db.execute(f"INSERT OR REPLACE INTO main.{table} SELECT * FROM other.{table} {where}")
    finally:
        db.execute("DETACH DATABASE other")
