"""A durable per-sample results store on SQLite (standard library).

Each batch of work is written in one transaction together with its completion marker, so after a crash
(even ``kill -9``) a batch is either fully present or absent: a rerun skips the completed batches and recomputes
only the missing ones, and no sample is lost or counted twice. The file keeps the run's manifest; opening it with a
different configuration is refused, so results made under different settings are never mixed.

Tables (all keyed by set name and the sample's stable id):

* ``samples(set, id, label, prediction)``: ground truth (-1 = OOD) and the classifier's prediction;
* ``outputs(set, id, logits, features)``: the cached classifier pass (float32 blobs);
* ``scores(method, set, id, key, value)``: every score and diagnostic of a method (``key`` "score" is the OOD
  score, higher = more OOD; DiffGuard adds one key per distance and "stop" / "start");
* ``images(method, set, id, shape, data)``: uint8 syntheses for galleries;
* ``batches(method, set, batch, size, seconds)``: completion markers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from diffguard.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (set_name TEXT, id INTEGER, label INTEGER, prediction INTEGER,
                                    PRIMARY KEY (set_name, id));
CREATE TABLE IF NOT EXISTS outputs (set_name TEXT, id INTEGER, logits BLOB, features BLOB,
                                    PRIMARY KEY (set_name, id));
CREATE TABLE IF NOT EXISTS scores (method TEXT, set_name TEXT, id INTEGER, key TEXT, value REAL,
                                   PRIMARY KEY (method, set_name, id, key));
CREATE TABLE IF NOT EXISTS images (method TEXT, set_name TEXT, id INTEGER, shape TEXT, data BLOB,
                                   PRIMARY KEY (method, set_name, id));
CREATE TABLE IF NOT EXISTS batches (method TEXT, set_name TEXT, batch INTEGER, size INTEGER, seconds REAL,
                                    finished REAL, PRIMARY KEY (method, set_name, batch));
"""


class StoreError(UserError, RuntimeError):
    """The results file cannot be used for this run; the message says why and what to do."""


def _check_lengths(n: int, scores: Mapping[str, np.ndarray] | None = None, **arrays: np.ndarray | None) -> None:
    """Raise ValueError unless every score column and every given per-sample array has ``n`` rows (a short
    column would otherwise fail half-way through the transaction with an IndexError, or a long one be cut)."""
    given = {f"scores[{k!r}]": v for k, v in (scores or {}).items()}
    given.update({k: v for k, v in arrays.items() if v is not None})
    wrong = {k: len(v) for k, v in given.items() if len(v) != n}
    if wrong:
        raise ValueError(f"write_batch got {n} ids but {wrong} rows; pass one row per id")


class ResultStore:
    """Open (or create) ``path`` for a run described by ``manifest`` (a JSON-able dict).

    ``manifest["config"]`` must match the stored one exactly; other manifest entries (machine, time) are
    refreshed. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], manifest: Mapping | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;" + SCHEMA)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot open results file {self.path}: {err}; move it away to start afresh") from None
        if manifest is not None:
            self._check_manifest(dict(manifest))

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # -- manifest ---------------------------------------------------------------------------------------------
    def _check_manifest(self, manifest: dict) -> None:
        old = self.get_meta("manifest")
        if old is not None and old.get("config") != manifest.get("config"):
            diff = sorted(k for k in set(old.get("config", {})) | set(manifest.get("config", {}))
                          if old.get("config", {}).get(k) != manifest.get("config", {}).get(k))
            raise StoreError(f"{self.path} holds results of a different configuration (differs in: {diff}); "
                             "use another --out folder, or delete the folder to start afresh")
        self.set_meta("manifest", manifest)

    def get_meta(self, key: str) -> dict | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: object) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    # -- writing ----------------------------------------------------------------------------------------------
    def done_batches(self, method: str, set_name: str) -> set[int]:
        rows = self.db.execute("SELECT batch FROM batches WHERE method = ? AND set_name = ?", (method, set_name))
        return {r[0] for r in rows}

    def write_batch(self, method: str, set_name: str, batch: int, ids: Iterable[int],
                    scores: Mapping[str, np.ndarray] | None = None, *, labels: np.ndarray | None = None,
                    predictions: np.ndarray | None = None, logits: np.ndarray | None = None,
                    features: np.ndarray | None = None, images: np.ndarray | None = None,
                    seconds: float = 0.0) -> None:
        """Write one batch and its completion marker in a single transaction (all or nothing).

        Args:
            ids: (B,) stable sample ids. scores: key -> (B,) floats. labels / predictions: (B,) ints (sample
            rows). logits (B, K), features (B, D): float32. images: uint8 (B, H, W, C).
        """
        ids = [int(i) for i in ids]
        _check_lengths(len(ids), scores=scores, labels=labels, predictions=predictions, logits=logits,
                       features=features, images=images)
        with self.db:
            if labels is not None:
                self.db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)",
                                    [(set_name, i, int(labels[k]), int(predictions[k]) if predictions is not None
                                      else None) for k, i in enumerate(ids)])
            if logits is not None:
                self.db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)", [
                    (set_name, i, np.asarray(logits[k], np.float32).tobytes(),
                     np.asarray(features[k], np.float32).tobytes() if features is not None else None)
                    for k, i in enumerate(ids)])
            for key, vals in (scores or {}).items():
                self.db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
                                    [(method, set_name, i, key, float(vals[k])) for k, i in enumerate(ids)])
            if images is not None:
                self.db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?)", [
                    (method, set_name, i, json.dumps(list(images[k].shape)), np.ascontiguousarray(images[k],
                     np.uint8).tobytes()) for k, i in enumerate(ids)])
            self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                            (method, set_name, batch, len(ids), seconds, time.time()))

    # -- reading ----------------------------------------------------------------------------------------------
    def samples(self, set_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels, predictions) of a set, sorted by id."""
        rows = self.db.execute("SELECT id, label, prediction FROM samples WHERE set_name = ? ORDER BY id",
                               (set_name,)).fetchall()
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
        return arr[:, 0], arr[:, 1], arr[:, 2]

    def outputs(self, set_name: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cached (logits (N, K), features (N, D)) for ``ids``, in that order."""
        rows = dict(((r[0]), (r[1], r[2])) for r in self.db.execute(
            "SELECT id, logits, features FROM outputs WHERE set_name = ?", (set_name,)))
        missing = [int(i) for i in ids if int(i) not in rows]
        if missing:
            raise StoreError(f"classifier outputs missing for {len(missing)} sample(s) of {set_name!r}")
        logits = np.stack([np.frombuffer(rows[int(i)][0], np.float32) for i in ids])
        feats = np.stack([np.frombuffer(rows[int(i)][1], np.float32) for i in ids])
        return logits, feats

    def scores(self, method: str, set_name: str, ids: np.ndarray, key: str = "score") -> np.ndarray:
        """(N,) float64 values of ``key`` for ``ids`` in that order; NaN where absent."""
        got = dict(self.db.execute("SELECT id, value FROM scores WHERE method = ? AND set_name = ? AND key = ?",
                                   (method, set_name, key)).fetchall())
        return np.array([got.get(int(i), np.nan) for i in ids], dtype=np.float64)

    def score_columns(self, method: str, set_name: str, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Every stored key of ``method`` for ``ids`` of a set in one query: key -> (N,) float64 in ids' order,
        NaN where a row lacks that key."""
        wanted = [int(i) for i in ids]
        pos = {i: k for k, i in enumerate(wanted)}
        marks = ",".join("?" * len(wanted))
        out: dict[str, np.ndarray] = {}
        for i, key, value in self.db.execute(f"SELECT id, key, value FROM scores WHERE method = ? AND set_name = ? "
                                             f"AND id IN ({marks})", (method, set_name, *wanted)):
            out.setdefault(key, np.full(len(wanted), np.nan))[pos[i]] = value
        return out

    def score_keys(self, method: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT key FROM scores WHERE method = ? ORDER BY key",
                                              (method,))]

    def image(self, method: str, set_name: str, sample_id: int) -> np.ndarray | None:
        row = self.db.execute("SELECT shape, data FROM images WHERE method = ? AND set_name = ? AND id = ?",
                              (method, set_name, int(sample_id))).fetchone()
        return None if row is None else np.frombuffer(row[1], np.uint8).reshape(json.loads(row[0]))

    def batch_cost(self, method: str, set_name: str, batch: int) -> tuple[float, int]:
        """(compute seconds, rows) of one finished batch; (0.0, 0) if it is not finished."""
        row = self.db.execute("SELECT seconds, size FROM batches WHERE method = ? AND set_name = ? AND batch = ?",
                              (method, set_name, batch)).fetchone()
        return (0.0, 0) if row is None else (float(row[0]), int(row[1]))

    def seconds(self, method: str) -> float:
        """Summed compute seconds of a method's batches."""
        row = self.db.execute("SELECT COALESCE(SUM(seconds), 0) FROM batches WHERE method = ?", (method,)).fetchone()
        return float(row[0])

    def seconds_per_image(self, method: str) -> float:
        """Compute seconds per scored row of a method (its batches' summed seconds / their rows; NaN if none)."""
        secs, rows = self.db.execute("SELECT COALESCE(SUM(seconds), 0), COALESCE(SUM(size), 0) FROM batches "
                                     "WHERE method = ?", (method,)).fetchone()
        return float(secs) / rows if rows else float("nan")
