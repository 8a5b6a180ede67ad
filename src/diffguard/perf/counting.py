"""Count network evaluations and time them bare: the "floor" of a detector run.

:class:`NetworkCounter` hooks named ``nn.Module`` s (the diffusion network, the classifier, ...) and records every
call: its batch size and whether it ran without autograd ("fwd"), built a graph that nobody differentiated
("fwd+graph", e.g. the authors' duplicate diffusion call inside the guidance function) or was differentiated
("fwd+bwd", Clean-Grad guidance, Grad-CAM). :meth:`NetworkCounter.floor_seconds` replays one recorded call per
(network, kind, batch size) bare, times it, and sums the times over all recorded calls: the time the run would take
if it did nothing but those network evaluations at those batch sizes.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Call:
    """One recorded network call: network name, batch size, and kind ("fwd", "fwd+graph" or "fwd+bwd")."""

    name: str
    batch: int
    kind: str = "fwd"


@dataclass
class NetworkCounter:
    """Context manager counting the calls of named modules.

    Args:
        modules: name -> module, e.g. ``{"diffusion": unet, "classifier": clf.model}``.
        keep_inputs: keep one (detached) copy of the inputs per (name, kind, batch) for :meth:`floor_seconds`.
    """

    modules: Mapping[str, nn.Module]
    keep_inputs: bool = True
    calls: list[Call] = field(default_factory=list)
    _inputs: dict[tuple[str, int], tuple[tuple, dict]] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)
    _paused: bool = False

    def __enter__(self) -> "NetworkCounter":
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if self._paused:
                return
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
            call = Call(name, int(first.shape[0]) if first is not None else 1)
            out = _first_tensor(output)
            if out is not None and out.requires_grad:
                call.kind = "fwd+graph"

                def mark(grad: Tensor) -> None:
                    call.kind = "fwd+bwd"

                out.register_hook(mark)
            self.calls.append(call)
            if self.keep_inputs and (name, call.batch) not in self._inputs:
                self._inputs[(name, call.batch)] = (_detach(args), _detach(kwargs))

        return hook

    def reset(self) -> None:
        """Forget the recorded calls (the kept inputs stay)."""
        self.calls.clear()

    def images(self) -> dict[str, int]:
        """Images pushed through each network per kind, e.g. {"diffusion fwd": 3000, "classifier fwd+bwd": 480}."""
        out: Counter[str] = Counter()
        for c in self.calls:
            out[f"{c.name} {c.kind}"] += c.batch
        return dict(out)

    def floor_seconds(self, repeats: int = 3, calls: list[Call] | None = None) -> tuple[float, dict[str, float]]:
        """Sum over recorded calls (or the given subset) of the bare time of one call of the same network, kind and
        batch size.

        Each distinct (name, kind, batch) is replayed ``repeats`` times after one warm-up and the median is used
        (recording is paused meanwhile). Returns (total seconds, seconds per "name kind").
        """
        cost: dict[tuple[str, str, int], float] = {}
        per: Counter[str] = Counter()
        self._paused, paused = True, self._paused
        try:
            for c in self.calls if calls is None else calls:
                key = (c.name, c.kind, c.batch)
                if key not in cost:
                    cost[key] = self.time_call(c.name, c.kind, c.batch, repeats)
                per[f"{c.name} {c.kind}"] += cost[key]
        finally:
            self._paused = paused
        return sum(per.values()), dict(per)

    def flops_per_image(self) -> dict[str, float]:
        """FLOPs of one image through each "network kind" (fwd, fwd+graph, fwd+bwd), counted with
        ``torch.utils.flop_counter.FlopCounterMode`` on a replay of the smallest recorded batch of that network."""

        out: dict[str, float] = {}
        for key in sorted({(c.name, c.kind) for c in self.calls}):
            name, kind = key
            batch = min(c.batch for c in self.calls if (c.name, c.kind) == key)
            args, kwargs = self._inputs[(name, batch)]
            with FlopCounterMode(display=False) as fc:
                _replay(self.modules[name], args, kwargs, kind)
            out[f"{name} {kind}"] = fc.get_total_flops() / batch
        return out

    def time_call(self, name: str, kind: str, batch: int, repeats: int = 3) -> float:
        """Median seconds of one bare call of ``name`` on the kept inputs of that batch size."""
        args, kwargs = self._inputs[(name, batch)]
        module = self.modules[name]
        times = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            _replay(module, args, kwargs, kind)
            if i:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _replay(module: nn.Module, args: tuple, kwargs: dict, kind: str) -> None:
    if kind == "fwd":
        with torch.no_grad():
            _sync(_first_tensor(module(*args, **kwargs)))
        return
    with torch.enable_grad():
        leaf = args[0].detach().requires_grad_(True)
        out = _first_tensor(module(leaf, *args[1:], **kwargs))
        if kind == "fwd+bwd":  # backward w.r.t. the input only (backward(inputs=...) also works under
            out.float().sum().backward(inputs=[leaf])  # FlopCounterMode, autograd.grad does not)
            out = leaf.grad
    _sync(out)


def _sync(t: Tensor | None) -> None:
    if t is not None and t.is_cuda:
        torch.cuda.synchronize(t.device)


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "sample") and isinstance(output.sample, Tensor):
        return output.sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


def _detach(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(_detach(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj
