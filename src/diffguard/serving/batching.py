"""Adaptive batching inside the runtime: the images of concurrent requests go through one scoring call.

A request is checked and decoded on its own first (:mod:`diffguard.serving.protocol`), so a bad request is refused
before it can meet other requests. Valid requests wait in a queue; a batch closes when it holds ``max_images``
images or when its first request has waited ``max_wait`` seconds, and is scored in one call on the scoring thread
(one at a time, so the model gets every core while the event loop keeps answering). While a batch is scored, new
requests queue up and form the next batch at once: the busier the server, the larger its batches.

Each request keeps its own per-sample seeds (``ids`` 0..n-1, as ``guard.score(x)`` alone would use), so a request's
answer does not depend on its batch-mates. Requests are never split across batches; one larger than ``max_images``
is scored alone. If a merged call fails, each of its requests is scored alone, so only the request at fault gets
the error. A request whose client went away before its batch was formed is dropped.

MLServer's own adaptive batching (``max_batch_size`` / ``max_batch_time`` in the model settings) is not used:
in MLServer 1.7.1 it merges requests before the runtime sees them, so a malformed request fails its batch-mates,
a request without inputs never gets an answer, and the request boundaries (hence the per-request seeds) are lost.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from diffguard.errors import UserError

Arrays = dict[str, np.ndarray]
ScoreFn = Callable[[Tensor, Tensor], Arrays]
"""``score(images (N, C, H, W), ids (N,)) -> {name: (N,) array}``, run on the executor."""


@dataclass
class _Pending:
    images: Tensor
    future: asyncio.Future
    arrived: float


class ImageBatcher:
    """Merges concurrent requests' images into batches of at most ``max_images`` (see the module docstring).

    Args:
        score: the scoring function, called on ``executor`` with the merged images and their ids.
        executor: where scoring runs (a single thread: one batch at a time).
        max_images: close a batch at this many images.
        max_wait: close a batch when its first request has waited this many seconds.
    """

    def __init__(self, score: ScoreFn, executor: Executor, max_images: int = 32, max_wait: float = 0.01):
        if max_images < 1:
            raise UserError(f"max_batch_images must be at least 1, got {max_images}")
        if max_wait < 0:
            raise UserError(f"max_batch_time must be 0 or more seconds, got {max_wait}")
        self._score = score
        self._executor = executor
        self.max_images = int(max_images)
        self.max_wait = float(max_wait)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def score(self, images: Tensor) -> Arrays:
        """The score arrays of ``images`` (n, C, H, W), scored with batch-mates that arrive meanwhile."""
        loop = asyncio.get_running_loop()
        pending = _Pending(images, loop.create_future(), loop.time())
        self._queue.append(pending)
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await pending.future

    async def _run(self) -> None:
        try:
            while self._queue:
                await self._wait_for_batch()
                batch = self._take()
                if batch:
                    await self._score_batch(batch)
        except Exception as err:  # a bug here must not leave requests waiting forever
            while self._queue:
                _settle(self._queue.popleft(), error=err)
            raise

    async def _wait_for_batch(self) -> None:
        """Return when the queue holds ``max_images`` images or its oldest request has waited ``max_wait``."""
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrived + self.max_wait
        while self._queued_images() < self.max_images:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _queued_images(self) -> int:
        return sum(len(p.images) for p in self._queue if not p.future.done())

    def _take(self) -> list[_Pending]:
        """Whole requests from the head of the queue, up to ``max_images`` images (at least one request)."""
        batch: list[_Pending] = []
        n = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # its client went away
                self._queue.popleft()
                continue
            if batch and n + len(head.images) > self.max_images:
                break
            batch.append(self._queue.popleft())
            n += len(head.images)
        return batch

    async def _score_batch(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        sizes = [len(p.images) for p in batch]
        x = batch[0].images if len(batch) == 1 else torch.cat([p.images for p in batch])
        ids = torch.cat([torch.arange(n) for n in sizes])
        try:
            merged = await loop.run_in_executor(self._executor, self._score, x, ids)
            parts = split_arrays(merged, sizes)
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0], error=err)
                return
            for pending in batch:  # find the request at fault: each alone
                await self._score_batch([pending])
            return
        for pending, arrays in zip(batch, parts):
            _settle(pending, arrays)


def split_arrays(merged: Arrays, sizes: list[int]) -> list[Arrays]:
    """Cut each (sum(sizes),) array of ``merged`` into consecutive pieces of ``sizes``."""
    total = sum(sizes)
    for name, values in merged.items():
        if len(values) != total:
            raise RuntimeError(f"scoring returned {len(values)} values of {name!r} for {total} images")
    bounds = np.cumsum([0, *sizes])
    return [{k: v[a:b] for k, v in merged.items()} for a, b in zip(bounds[:-1], bounds[1:])]


def _settle(pending: _Pending, arrays: Arrays | None = None, error: BaseException | None = None) -> None:
    if pending.future.done():  # cancelled by its client meanwhile
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        pending.future.set_result(arrays)
