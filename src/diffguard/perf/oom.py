"""Out-of-memory back-off: run a function over batches, halving the batch size when the device runs out of memory."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor


def run_batched(fn: Callable[..., Any], inputs: Tensor | Sequence[Tensor], batch_size: int, min_batch_size: int = 1,
                on_backoff: Callable[[int], None] | None = None) -> Any:
    """``fn`` over consecutive slices of ``inputs`` (along dim 0), joined; on ``torch.OutOfMemoryError`` the batch
    size is halved and the failed slice retried, and the smaller size is kept for the rest.

    Args:
        fn: called as ``fn(*slices)``; returns a Tensor, a tuple/list of Tensors or a dict of Tensors (joined along
            dim 0 per position / key).
        inputs: one tensor or a sequence of tensors with the same length N.
        batch_size: the first batch size to try (e.g. the largest that might fit).
        min_batch_size: give up (re-raise) when a batch of this size does not fit.
        on_backoff: called with the new batch size after each halving (for logging).

    Returns:
        The joined outputs, as if ``fn`` had been called on all N rows at once.
    """
    if batch_size < 1 or min_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got batch_size={batch_size}, min_batch_size={min_batch_size}")
    tensors = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"all inputs need the same length, got {[t.shape[0] for t in tensors]}")
    outputs, i = [], 0
    while i < n:
        size = min(batch_size, n - i)
        try:
            outputs.append(fn(*(t[i:i + size] for t in tensors)))
        except torch.OutOfMemoryError as err:
            if size <= min_batch_size:
                raise torch.OutOfMemoryError(f"out of memory even at batch size {size}; free device memory, use "
                                             "autocast='bf16' / a smaller model, or run on a larger device") from err
            batch_size = max(min_batch_size, size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_backoff is not None:
                on_backoff(batch_size)
            continue
        i += size
    return _join(outputs)


def _join(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, Tensor):
        return torch.cat(outputs)
    if isinstance(first, dict):
        return {k: _join([o[k] for o in outputs]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_join([o[k] for o in outputs]) for k in range(len(first)))
    raise TypeError(f"cannot join outputs of type {type(first).__name__}; return tensors, tuples or dicts")
