"""The benchmark runner: one shared classifier pass, every method on every set, durable per-batch results.

Work is split into fixed batches (the run's row plan and batch size are part of its manifest); each finished batch
is committed to the :class:`~diffguard.run.store.ResultStore` with its completion marker, so an interrupted run
resumes where it stopped and ends with results identical to an uninterrupted one. Per-set sample limits draw a
fixed-seed subset. The configuration lives in :mod:`diffguard.run.run_config`, the row plan in
:mod:`diffguard.run.plan` (both re-exported here), evaluation and outputs in :mod:`diffguard.evaluation.evaluate_run`.

Under ``torchrun`` (``Dist.world_size > 1``) the same batches are shared out by rank (batch ``b`` to rank
``b % world_size``); see :mod:`diffguard.run.distributed` and :meth:`Runner.run` for the phases.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from diffguard.bench.definitions import BenchmarkSpec
from diffguard.bench.open_sets import open_benchmark, resolve_benchmark
from diffguard.classify.adapter import fmnist6_classifier
from diffguard.detectors.detector import ClassifierOutputs
from diffguard.devices import resolve_device, to_device
from diffguard.errors import ConfigError
from diffguard.run import distributed
from diffguard.run.config_check import check_run_config
from diffguard.run.distributed import Dist, gather_stores, read_prior, share_classifier_rows, write_rows
from diffguard.run.manifest import folder_hash
from diffguard.run.model_facts import member_folders
from diffguard.run.plan import batches, row_plan, select_rows
from diffguard.run.preflight import preflight
from diffguard.run.run_config import FusionConfig, RunConfig, config_dict
from diffguard.run.store import ResultStore, StoreError
from diffguard.specs.method_specs import MethodConfig, build_method
from diffguard.specs.model_specs import build_backend, build_classifier

__all__ = ["FusionConfig", "MethodUnavailable", "RunConfig", "Runner", "batches", "config_dict", "row_plan",
           "select_rows"]


class MethodUnavailable(RuntimeError):
    """A configured method cannot be built on this machine (e.g. ensemble members not trained yet)."""


class Runner:
    """Runs one :class:`RunConfig` into ``out`` (``results.sqlite`` plus exports).

    ``dist`` places this process in a ``torchrun`` group (default: a single process, the whole work).
    """

    def __init__(self, cfg: RunConfig, out: str | Path, manifest: dict[str, Any] | None = None,
                 progress: bool = True, spec: BenchmarkSpec | None = None, dist: Dist | None = None):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.dist = dist or Dist()
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.spec = spec or resolve_benchmark(cfg.benchmark)
        if cfg.image_size is not None:
            self.spec = dataclasses.replace(self.spec, image_size=cfg.image_size)
        check_run_config(cfg, self.spec)  # every problem at once, before any data is read or folder written
        self.sources = open_benchmark(self.spec, cfg.data_root, self._set_names())
        self.plan = row_plan(self.spec, self.sources, cfg)
        manifest = dict(manifest or {})
        self.manifest = {**manifest, "config": {**cfg.plan_key(), **manifest.get("config", {})}}
        self._backend: Any = None
        self._classifier: Any = None
        self.skipped: dict[str, str] = {}
        self._prior: set[tuple[str, str, int]] = set()  # (method, set, batch) already in a merged results.sqlite

    def _set_names(self) -> list[str]:
        names = self.cfg.sets or self.spec.default_sets()
        needed = [s.name for s in self.spec.by_role("train", "val", "id")]
        return [s.name for s in self.spec.sets if s.name in set(names) | set(needed)]

    def eval_sets(self) -> list[str]:
        """Sets every method scores: val, the ID test set and the OOD sets (not train)."""
        return [n for n in self.sources if self.spec.get(n).role != "train"]

    # -- models -----------------------------------------------------------------------------------------------
    @property
    def classifier(self) -> Any:
        if self._classifier is None:
            self._classifier = to_device(build_classifier(self.cfg.classifier), self.device)
            check_classifier(self._classifier, self.spec)
        return self._classifier

    def backend(self) -> Any:
        if self._backend is None:
            self._backend = to_device(build_backend(self.cfg.diffusion), self.device)
            check_backend(self._backend, self.spec)
        return self._backend

    def member_folders(self) -> list[str]:
        """Deep-Ensemble member folders (:func:`~diffguard.run.model_facts.member_folders`)."""
        return member_folders(self.cfg)

    def members(self) -> list[Any]:
        folders = self.member_folders()
        if len(folders) < 2:
            raise MethodUnavailable(f"Deep Ensemble needs >= 2 classifiers, found {folders}; train members with "
                                    "`diffguard train classifier --seed N --out src/diffguard/weights/"
                                    "fmnist6-classifier-sN` or set `ensemble: [folders]`")
        return [to_device(fmnist6_classifier(f), self.device) for f in folders]

    # -- running ----------------------------------------------------------------------------------------------
    def run(self, methods: Sequence[str] | None = None) -> ResultStore | None:
        """Run the classifier pass and the given methods (default: all); returns the open store.

        In a group of ``N`` processes: each rank runs its share of the classifier pass into its own store, then
        every rank copies the others' classifier rows (fits and post-hoc scores need all of them); post-hoc
        baselines (one unit, batch 0) fall to rank 0, image-level batches are shared out; after a last barrier
        rank 0 merges the rank stores into ``results.sqlite`` and returns it, other ranks return None. A rank
        only reads another's file while that file is closed, between two barriers. A group resumes what the
        folder's ``results.sqlite`` already holds (a single-process run's, or an earlier group's): every rank
        copies its classifier rows and skips its finished batches.
        """
        preflight(self.out)
        d = self.dist
        store = ResultStore(d.store_path(self.out), self.manifest)
        chosen = [m for m in self.cfg.methods if methods is None or m.name in methods]
        for m in chosen:
            self._check_method(store, m)
        if d.active and d.main:  # refuse now, not after hours of work, what the final merge would refuse
            with ResultStore(self.out / "results.sqlite", self.manifest) as merged:
                for m in chosen:
                    self._check_method(merged, m)
        if d.active:
            distributed.barrier(d)  # rank 0 has checked results.sqlite and closed it
            rows, self._prior = read_prior(self.out / "results.sqlite")
            write_rows(store, rows)
        self.classifier_pass(store)
        if d.active:
            store = share_classifier_rows(store, d, self.manifest)
        self._methods(store, chosen)
        return gather_stores(store, d, self.manifest) if d.active else store

    def _methods(self, store: ResultStore, chosen: list[MethodConfig]) -> None:
        train = None
        for m in chosen:
            try:
                method = build_method(m, self.classifier, self.backend, self.members)
            except MethodUnavailable as err:
                self.skipped[m.name] = str(err)
                print(f"diffguard: skipping method {m.name!r}: {err}")
                continue
            if method.needs.fit and (method.needs.images or self.dist.owns(0)):
                train = train if train is not None else self.outputs(store, self.spec.train_set)
                method.fit(train)
            if method.needs.images:
                self.image_pass(store, m, method)
            else:
                self.output_pass(store, m, method)

    def identity(self, m: MethodConfig) -> dict[str, Any]:
        """What a method's stored results depend on beyond the run's plan: its config (and ensemble members)."""
        ident = {k: v for k, v in m.as_dict().items() if k not in ("display", "calibration", "reuse")}  # raw scores
        if m.needs.members and "members" not in m.params:
            ident["member_hashes"] = [folder_hash(Path(f)) for f in self.member_folders()]
        return ident

    def _check_method(self, store: ResultStore, m: MethodConfig) -> None:
        key, ident = f"method:{m.name}", self.identity(m)
        old = store.get_meta(key)
        if old is not None and old != ident:
            raise StoreError(f"method {m.name!r} in {store.path} was run with another configuration:\n  stored "
                             f"{old}\n  now    {ident}\nrename the method or use another --out folder")
        store.set_meta(key, ident)

    def _done(self, store: ResultStore, method: str, set_name: str) -> set[int]:
        """Finished batches of a (method, set): in this process's store or in the merged store it resumes."""
        return store.done_batches(method, set_name) | {b for m, s, b in self._prior if (m, s) == (method, set_name)}

    def _bar(self, total: int, done: int, desc: str) -> Any:
        return tqdm(total=total, initial=done, desc=desc, unit="batch", disable=not self.progress,
                    dynamic_ncols=True, leave=False)

    def classifier_pass(self, store: ResultStore) -> None:
        """Logits, features and predictions of every planned row, cached per batch."""
        for name, src in self.sources.items():
            chunks = batches(self.plan[name], max(self.cfg.batch_size, 256))
            done = store.done_batches("classifier", name)
            with self._bar(len(chunks), len(done), f"classifier {name}") as bar:
                for b, rows in enumerate(chunks):
                    if b in done or not self.dist.owns(b):
                        continue
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        logits, feats = self.classifier.logits_and_features(src.load(rows).to(self.device))
                        logits, feats = logits.cpu(), feats.cpu()
                    store.write_batch("classifier", name, b, src.ids[rows].tolist(), labels=src.labels[rows].numpy(),
                                      predictions=logits.argmax(1).numpy(), logits=logits.numpy(),
                                      features=feats.numpy(), seconds=time.perf_counter() - t0)
                    bar.update(1)

    def outputs(self, store: ResultStore, set_name: str) -> Any:
        src, rows = self.sources[set_name], self.plan[set_name]
        ids = src.ids[rows].numpy()
        logits, feats = store.outputs(set_name, ids)
        return ClassifierOutputs(torch.from_numpy(logits).to(self.device), torch.from_numpy(feats).to(self.device),
                                 src.labels[rows].to(self.device))

    def output_pass(self, store: ResultStore, m: MethodConfig, method: Any) -> None:
        """A post-hoc baseline on the cached outputs: one unit per set."""
        for name in self.eval_sets():
            if 0 in self._done(store, m.name, name) or not self.dist.owns(0):
                continue
            t0 = time.perf_counter()
            scores = {"score": method.score(self.outputs(store, name)).double().cpu().numpy()}
            ids = self.sources[name].ids[self.plan[name]].tolist()
            store.write_batch(m.name, name, 0, ids, scores, seconds=time.perf_counter() - t0)

    def image_pass(self, store: ResultStore, m: MethodConfig, method: Any) -> None:
        """An image-level method, batch by batch, every set; finished batches are skipped."""
        size = m.batch_size or self.cfg.batch_size
        for name in self.eval_sets():
            src, chunks = self.sources[name], batches(self.plan[name], size)
            done = self._done(store, m.name, name)
            with self._bar(len(chunks), len(done), f"{m.name} {name}") as bar:
                for b, rows in enumerate(chunks):
                    if b in done or not self.dist.owns(b):
                        continue
                    t0 = time.perf_counter()
                    x, ids, y = src.load(rows).to(self.device), src.ids[rows], src.labels[rows]
                    if m.reuse is not None and b in store.done_batches(m.reuse, name):
                        columns, images, copied = reuse_rows(store, m.reuse, name, b, method, x, ids, y)
                    else:
                        (columns, images), copied = _computed(method.details(x, ids, y)), 0.0
                    images = _thumbs(images)
                    store.write_batch(m.name, name, b, ids.tolist(), columns, images=images,
                                      seconds=time.perf_counter() - t0 + copied)
                    bar.update(1)


def _computed(scored: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(columns as float64 arrays, uint8 syntheses or None) of a detector's :class:`Scored` batch."""
    columns = {"score": scored.score, **scored.columns}
    columns = {k: v.detach().double().cpu().numpy() for k, v in columns.items()}
    return columns, None if scored.images is None else _to_uint8(scored.images)


def reuse_rows(store: ResultStore, source: str, set_name: str, batch: int, method: Any, x: torch.Tensor,
               ids: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray | None, float]:
    """One batch of a method with ``reuse``: rows guided towards the label ``source`` used are copied from its
    stored batch (same rows: same plan and batch size), the others are synthesised with the labels chosen for the
    whole batch (so an oracle's random OOD labels are those of a full run).

    Returns (columns, syntheses or None, seconds charged for the copied rows: their share of the source batch's
    compute time, so per-image costs stay comparable with a run that computes every row).
    """
    labels = method.guided_labels(x, y_true=y).cpu()
    key = ids.numpy()
    columns = store.score_columns(source, set_name, key)
    fresh = np.flatnonzero(labels.numpy() != columns["label"])
    images = [store.image(source, set_name, int(i)) for i in key]
    if len(fresh):
        idx = torch.from_numpy(fresh)
        new, synth = _computed(method.details(x[idx.to(x.device)], ids[idx], y[idx], labels=labels[idx]))
        synth = _thumbs(synth)  # the stored rows are thumbnails already
        if set(new) != set(columns):
            raise StoreError(f"{source!r} stored columns {sorted(columns)}, this method computes {sorted(new)}: "
                             "the methods differ beyond their labels; remove `reuse`")
        for k in columns:
            columns[k][fresh] = new[k]
        for j, row in enumerate(fresh):
            images[row] = None if synth is None else synth[j]
    secs, size = store.batch_cost(source, set_name, batch)
    copied = len(key) - len(fresh)
    stacked = None if any(im is None for im in images) else np.stack(images)
    return columns, stacked, secs * copied / max(size, 1)


def _thumbs(images: np.ndarray | None, side: int = 64) -> np.ndarray | None:
    """Keep small syntheses as they are; shrink larger ones to ``side`` pixels for the gallery."""
    if images is None or images.shape[1] <= side:
        return images
    t = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    t = torch.nn.functional.interpolate(t, size=(side, side), mode="area")
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def check_classifier(classifier: Any, spec: BenchmarkSpec) -> None:
    """Refuse a classifier whose number of classes is not the benchmark's (a clear error instead of a shape error
    deep inside a method)."""
    n = getattr(classifier, "num_classes", None)
    if n is not None and int(n) != spec.num_classes:
        raise ConfigError(f"the classifier has {n} classes but benchmark {spec.name!r} has {spec.num_classes}: give "
                          "the classifier trained for it (classifier: ... in the config, or --set classifier=...)")


def check_backend(backend: Any, spec: BenchmarkSpec) -> None:
    """Refuse a pixel diffusion model whose image channels are not the benchmark's."""
    channels = getattr(backend, "channels", None)
    if channels is not None and not getattr(backend, "is_latent", False) and int(channels) != spec.channels:
        raise ConfigError(f"the diffusion model works on {channels}-channel images but benchmark {spec.name!r} has "
                          f"{spec.channels}: give the diffusion model trained for it (diffusion: ... in the config)")
