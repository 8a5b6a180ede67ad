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

import torch
import torch.distributed as tdist

from diffguard.run.store import ResultStore, StoreError

# Ranks wait at barriers for the slowest one; an image-level method can keep a rank busy for many hours.
BARRIER_TIMEOUT = datetime.timedelta(days=7)
# Tables copied by a merge; ``meta`` is handled separately (manifest check, method identities).
DATA_TABLES = ("samples", "outputs", "scores", "images", "batches")
# The classifier pass: table -> row filter.
CLASSIFIER_TABLES = {"samples": "", "outputs": "", "batches": "WHERE method = 'classifier'"}


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


def choose_backend() -> str:
    """NCCL when every process of this machine (``LOCAL_WORLD_SIZE``) gets its own CUDA device, else gloo."""

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= local else "gloo"


def init_group(d: Dist) -> None:
    """Join the process group (env:// rendezvous; backend from :func:`choose_backend`). No-op for one process."""

    if not d.active or tdist.is_initialized():
        return
    backend = choose_backend()
    if backend == "nccl":
        torch.cuda.set_device(d.local_rank)
    tdist.init_process_group(backend, init_method="env://", timeout=BARRIER_TIMEOUT)


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op for one process)."""

    if not d.active:
        return
    if tdist.get_backend() == "nccl":
        tdist.barrier(device_ids=[d.local_rank])
    else:
        tdist.barrier()


def finish_group(d: Dist) -> None:
    if d.active and tdist.is_initialized():
        tdist.destroy_process_group()


def rank_stores(out: Path, world_size: int) -> list[Path]:
    """The store files of the ranks of a group of ``world_size`` processes writing into ``out``."""
    return [Dist(r, world_size).store_path(out) for r in range(world_size)]


def share_classifier_rows(store: ResultStore, d: Dist, manifest: dict) -> ResultStore:
    """Give every rank the whole classifier pass (fits and post-hoc scores need all rows); returns the rank's
    store, reopened. A rank reads the others' files only while they are closed, between two barriers."""
    path = store.path
    store.close()
    barrier(d)  # every rank's share is on disk, its file closed
    rows = read_classifier_rows([p for p in rank_stores(path.parent, d.world_size) if p != path])
    barrier(d)  # every rank has read the others' files: each may write its own again
    store = ResultStore(path, manifest)
    write_rows(store, rows)
    return store


def gather_stores(store: ResultStore, d: Dist, manifest: dict) -> ResultStore | None:
    """Wait for every rank; rank 0 merges every rank store of the folder into ``results.sqlite`` and returns it.

    Rank files left by an earlier run with another world size are merged too (same configuration only).
    Other ranks return None.
    """
    out = store.path.parent
    store.close()
    barrier(d)
    if not d.main:
        return None
    merged = ResultStore(out / "results.sqlite", manifest)
    merge_stores(merged, sorted(out.glob("results.rank*.sqlite")), immutable=True)
    return merged


def _config_diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _open_read_only(path: Path, immutable: bool) -> sqlite3.Connection:
    """A read-only connection; ``immutable`` (no locks, no WAL index) for closed stores nobody writes meanwhile,
    which keeps reading another process's store safe on network filesystems."""
    if not path.is_file():
        raise StoreError(f"cannot read results file {path}: no such file (did every rank start?)")
    flag = "immutable=1" if immutable else "mode=ro"
    return sqlite3.connect(f"{path.resolve().as_uri()}?{flag}", uri=True, timeout=60)


def read_classifier_rows(paths: Iterable[Path], immutable: bool = True) -> dict[str, list[tuple]]:
    """The classifier pass (samples, outputs, their batch markers) of closed stores, table -> rows."""
    rows: dict[str, list[tuple]] = {t: [] for t in CLASSIFIER_TABLES}
    for path in paths:
        con = _open_read_only(Path(path), immutable=immutable)
        try:
            for table, where in CLASSIFIER_TABLES.items():
                rows[table] += con.execute(f"SELECT * FROM {table} {where}").fetchall()
        finally:
            con.close()
    return rows


def read_prior(merged: Path) -> tuple[dict[str, list[tuple]], set[tuple[str, str, int]]]:
    """What the folder's merged ``results.sqlite`` already holds, so a group resumes a run made by one process
    (or an earlier group): its classifier-pass rows, and every finished (method, set, batch) of the methods.

    Read while no process writes the file (rank 0 closed it before a barrier; the final merge comes after the
    last one); not ``immutable``, so rows still in the WAL of a killed single-process run are seen.
    """
    if not merged.is_file():
        return {t: [] for t in CLASSIFIER_TABLES}, set()
    rows = read_classifier_rows([merged], immutable=False)
    con = _open_read_only(merged, immutable=False)
    try:
        done = set(con.execute("SELECT method, set_name, batch FROM batches WHERE method != 'classifier'"))
    finally:
        con.close()
    return rows, done


def write_rows(target: ResultStore, rows: dict[str, list[tuple]]) -> None:
    """``INSERT OR REPLACE`` rows (table -> rows) into ``target`` in one transaction."""
    with target.db:
        for table, values in rows.items():
            if values:
                marks = ", ".join("?" * len(values[0]))
                target.db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", values)


def merge_stores(target: ResultStore, sources: Iterable[Path], immutable: bool = False) -> None:
    """Merge whole result stores into ``target`` (its manifest must be set), one transaction per source.

    Every source must hold the same manifest ``config`` as ``target`` and the same configuration for each method
    they share; otherwise :class:`StoreError` names the differing keys and nothing of that source is copied.
    Rows are keyed by (method, set, id[, key]) and computed deterministically, so a merge is idempotent.
    ``immutable``: the sources are closed and unchanging (rank stores after the last barrier).
    """
    mine = (target.get_meta("manifest") or {}).get("config", {})
    for src in sources:
        src = Path(src)
        if src.resolve() == target.path.resolve():
            continue
        con = _open_read_only(src, immutable)
        try:
            meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
            _check_mergeable(target, src, mine, meta)
            for key, ident in meta.items():
                if key.startswith("method:"):
                    target.set_meta(key, ident)
            with target.db:
                for table in DATA_TABLES:
                    cur = con.execute(f"SELECT * FROM {table}")
                    while chunk := cur.fetchmany(2048):
                        marks = ", ".join("?" * len(chunk[0]))
                        target.db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", chunk)
        finally:
            con.close()


def _check_mergeable(target: ResultStore, src: Path, mine: dict, meta: dict) -> None:
    theirs = (meta.get("manifest") or {}).get("config", {})
    if theirs != mine:
        raise StoreError(f"cannot merge {src} into {target.path}: different configuration (differs in: "
                         f"{_config_diff(mine, theirs)})")
    for key, ident in meta.items():
        old = target.get_meta(key) if key.startswith("method:") else None
        if old is not None and old != ident:
            raise StoreError(f"cannot merge {src} into {target.path}: method {key[7:]!r} was run with another "
                             f"configuration (differs in: {_config_diff(old, ident)})")
