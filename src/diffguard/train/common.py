"""Pieces shared by the training commands: device choice, seeded data order, EMA, resumable checkpoints, progress.

Determinism: every random draw of step ``k`` comes from a generator seeded by ``(seed, k)`` and the data order of
epoch ``e`` from one seeded by ``(seed, e)``, so a run resumed from a checkpoint at step ``k`` continues exactly as
the uninterrupted run would (given the same device and thread count).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from diffguard.bench.open_sets import open_benchmark, resolve_benchmark
from diffguard.data.fmnist6 import KNOWN_NAMES, load_fmnist6
from diffguard.errors import ConfigError
from diffguard.seeding import step_generator

CHECKPOINT = "checkpoint.pt"


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"`` takes CUDA when present, else the CPU; any other value is passed to :class:`torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} asked for CUDA but torch sees no GPU; use --device cpu or auto")
    return dev


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of training step ``step``: epochs are seeded permutations of ``n`` items, the last partial batch dropped.

    Returns a (batch_size,) int64 tensor on the CPU.
    """
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {n} training images")
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=step_generator(seed + 7919, epoch))
    return perm[k * batch_size : (k + 1) * batch_size]


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor in [0, 1]: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class EMA:
    """Exponential moving average of parameters and buffers, decay ramped as min(decay, (1 + k) / (10 + k))."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)


@dataclass
class RunState:
    """What a checkpoint holds besides tensors: the step reached and the wall time spent so far (seconds)."""

    step: int = 0
    wall_s: float = 0.0


def _identity(config: Any, data: dict[str, Any] | None) -> str:
    """What a checkpoint must have been made with: the config, and the training data when not fmnist6's."""
    return json.dumps(asdict(config) if data is None else {**asdict(config), "data": data}, sort_keys=True)


def save_checkpoint(out: Path, config: Any, state: RunState, tensors: dict[str, Any],
                    data: dict[str, Any] | None = None) -> None:
    """Write ``out/checkpoint.pt`` atomically (temp file + rename). Loadable with ``weights_only=True``.

    ``data``: the training data's record (:class:`TrainingData`), None for fmnist6."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT + ".tmp")
    payload = {"config": _identity(config, data), "state": asdict(state), **tensors}
    torch.save(payload, tmp)
    os.replace(tmp, out / CHECKPOINT)


def load_checkpoint(out: Path, config: Any, data: dict[str, Any] | None = None
                    ) -> tuple[RunState, dict[str, Any]] | None:
    """Read ``out/checkpoint.pt`` if present (never unpickling code). Refuses one made with another config or
    other training data."""
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    mine = _identity(config, data)
    if payload["config"] != mine:
        raise RuntimeError(
            f"{path} was written with another configuration:\n  {payload['config']}\nnow:\n  {mine}\n"
            "Use the same options to resume, or a new --out folder (or delete the checkpoint) to start over."
        )
    return RunState(**payload.pop("state")), payload


def training_images(data_root: str | os.PathLike[str] | None, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """fmnist6 ``train`` images (N, 1, 28, 28) in [-1, 1] and labels (N,), the first ``limit`` only when given."""

    train = load_fmnist6(("train",), data_root)["train"]
    if limit:
        return train.images[:limit], train.labels[:limit]
    return train.images, train.labels


MAX_TRAIN_SIZE = 64


@dataclass(frozen=True)
class TrainingData:
    """What a model is trained on. images: float32 (N, C, H, W) in [-1, 1]; labels: int64 (N,) in [0, K).

    ``record`` is None for the embedded fmnist6 data (the shipped models' recipe); for ``--data`` it describes the
    data (benchmark, train sets, image count, size, channels, classes, SHA-256 of the tensors) and goes into the
    checkpoint's identity (a resumed run refuses other data) and the model folder's training record.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    record: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


def training_data(data: str | os.PathLike[str] | None, data_root: str | os.PathLike[str] | None,
                  limit: int | None) -> TrainingData:
    """The training images: fmnist6's ``train`` set when ``data`` is None (or ``fmnist6``), else the ``train`` set(s)
    of the benchmark ``data`` names (a benchmark definition YAML or a registered name), all read into memory.

    Raises:
        ConfigError: the benchmark has no train set, or images larger than 64x64.
    """

    spec = None if data is None else resolve_benchmark(data, ("train",), "training")
    if spec is None or spec.source == "fmnist6":
        x, y = training_images(data_root, limit)
        return TrainingData(x, y, KNOWN_NAMES)
    if spec.image_size > MAX_TRAIN_SIZE:
        raise ConfigError(f"benchmark {spec.name!r} has {spec.image_size}x{spec.image_size} images; training "
                          f"supports sizes up to {MAX_TRAIN_SIZE}: set 'size' to {MAX_TRAIN_SIZE} or less")
    names = [s.name for s in spec.by_role("train")]
    sources = open_benchmark(spec, data_root, names)
    total = sum(len(src) for src in sources.values())
    left = min(limit, total) if limit else total
    xs, ys = [], []
    with tqdm(total=left, desc="reading training images", unit="img", disable=left < 2048) as bar:
        for src in sources.values():
            rows = list(range(min(left, len(src))))
            for i in range(0, len(rows), 512):
                xs.append(src.load(rows[i : i + 512]))
                bar.update(len(xs[-1]))
            ys.append(src.labels[rows])
            left -= len(rows)
    x, y = torch.cat(xs), torch.cat(ys)
    classes = spec.class_names or tuple(f"class {i}" for i in range(spec.num_classes))
    record = {"benchmark": spec.name, "sets": names, "images": int(x.shape[0]), "size": spec.image_size,
              "channels": spec.channels, "classes": list(classes), "digest": _digest(x, y)}
    return TrainingData(x, y, tuple(classes), record)


def _digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the training tensors (a resumed run refuses changed data)."""

    h = hashlib.sha256(x.contiguous().numpy().tobytes())
    h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()


def resume(ckpt_dir: Path, config: Any, model: nn.Module, opt: torch.optim.Optimizer,
           data: dict[str, Any] | None = None) -> tuple[RunState, dict]:
    """Restore model and optimizer from ``ckpt_dir`` when a checkpoint exists; returns (state, other tensors)."""
    resumed = load_checkpoint(ckpt_dir, config, data)
    if resumed is None:
        return RunState(), {}
    state, tensors = resumed
    model.load_state_dict(tensors.pop("model"))
    opt.load_state_dict(tensors.pop("optimizer"))
    print(f"resuming from step {state.step} of {config.steps} ({ckpt_dir})")
    return state, tensors


def train_loop(
    step_fn: Callable[[int], float],
    state: RunState,
    total: int,
    save: Callable[[RunState], None],
    ckpt_every: int,
    max_minutes: float | None,
    desc: str,
) -> bool:
    """Run ``step_fn(step) -> loss`` from ``state.step`` to ``total`` with a progress bar (loss, rate, ETA).

    Saves every ``ckpt_every`` steps and when ``max_minutes`` of wall time have passed in this call.
    Returns True when training reached ``total`` steps, False when it stopped early (resume by rerunning).
    """
    start = time.monotonic()
    last = start
    smooth = None
    bar = tqdm(total=total, initial=state.step, desc=desc, unit="step", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    try:
        while state.step < total:
            loss = step_fn(state.step)
            smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
            now = time.monotonic()
            state.wall_s += now - last
            last = now
            out_of_time = max_minutes is not None and now - start > 60.0 * max_minutes
            if state.step % ckpt_every == 0 or state.step == total or out_of_time:
                save(state)
            if out_of_time and state.step < total:
                return False
    finally:
        bar.close()
    return True


def iterate_minibatches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``x`` along dim 0 (evaluation helper)."""
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]
