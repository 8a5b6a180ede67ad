"""Host-side facts about the ``rows`` an eps function receives, computed once per rows tensor.

The DDIM loops pass the same ``rows`` tensor object for every level at which the active set does not change
(:func:`~diffguard.diffusion.ddim.ddim_sample` builds its active sets before the loop). Guidance that must decide on
the host which rows it works on (guided or unguided rows, per-sample crop generators) memoises that decision on the
identity of the rows tensor, so on a GPU it reads the rows back once per distinct active set, not at every step.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from torch import Tensor

T = TypeVar("T")


class RowsMemo(Generic[T]):
    """Memoise ``make(rows)`` on the identity of the rows tensor (the memo keeps the tensor alive, so an id is
    never reused while cached). Holds the ``size`` most recent entries."""

    def __init__(self, make: Callable[[Tensor], T], size: int = 8):
        self.make, self.size = make, size
        self._items: list[tuple[Tensor, T]] = []

    def __call__(self, rows: Tensor) -> T:
        for key, value in self._items:
            if key is rows:
                return value
        value = self.make(rows)
        self._items = [(rows, value), *self._items[: self.size - 1]]
        return value
