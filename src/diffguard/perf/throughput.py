"""End-to-end throughput against the network-evaluation floor (see :mod:`diffguard.perf.counting`)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from diffguard.perf.counting import NetworkCounter


@dataclass
class Throughput:
    """One measured run.

    Attributes:
        images: images scored.
        seconds: end-to-end wall time (s).
        images_per_s: images / seconds.
        evals_per_image: images pushed through each network per kind, divided by ``images``
            (e.g. {"diffusion fwd": 60.0, "classifier fwd+bwd": 120.0}).
        floor_seconds: sum over recorded network calls of the bare time of one call at the same batch size.
        floor_per_kind: the floor split by "network kind".
        ratio: seconds / floor_seconds (1.0 = nothing but network evaluations).
    """

    images: int
    seconds: float
    images_per_s: float
    evals_per_image: dict[str, float]
    floor_seconds: float
    floor_per_kind: dict[str, float]
    ratio: float

    def as_dict(self) -> dict:
        return asdict(self)


def measure(run: Callable[[Tensor, Tensor], object], x: Tensor, batch_size: int, modules: Mapping[str, nn.Module],
            repeats: int = 3) -> tuple[Throughput, list[object]]:
    """Run ``run(x_batch, ids_batch)`` over x in batches, count network calls, and time the floor of each batch
    right after it (so a changing machine load hits both alike).

    Args:
        run: scores one batch (e.g. ``lambda xb, ids: det.analyze(xb, ids=ids)``).
        x: (N, C, H, W) images in [-1, 1].
        batch_size: images per call of ``run``.
        modules: the networks to count, by name.
        repeats: timed repeats per distinct (network, kind, batch size) for the floor.

    Returns:
        (the measurement, the outputs of ``run`` per batch).
    """
    outputs, seconds, floor, per = [], 0.0, 0.0, Counter()
    with NetworkCounter(modules) as counter:
        for i in range(0, x.shape[0], batch_size):
            first = len(counter.calls)
            _sync(x)
            t0 = time.perf_counter()
            outputs.append(run(x[i:i + batch_size], torch.arange(i, min(i + batch_size, x.shape[0]))))
            _sync(x)
            seconds += time.perf_counter() - t0
            # the floor of this batch, timed right after it so that both see the same machine load
            f, p = counter.floor_seconds(repeats, counter.calls[first:])
            floor += f
            per.update(p)
    n = x.shape[0]
    evals = {k: v / n for k, v in sorted(counter.images().items())}
    return Throughput(n, seconds, n / seconds, evals, floor, dict(per), seconds / floor), outputs


def _sync(x: Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def network_modules(detector: object) -> dict[str, nn.Module]:
    """The networks of a DiffGuard detector worth counting: the diffusion network, the autoencoder's encoder and
    decoder (latent backends) and the classifier's model."""
    backend, clf = detector.backend, detector.classifier
    out: dict[str, nn.Module] = {}
    unet = getattr(backend, "unet", None) or getattr(getattr(backend, "eps_model", None), "unet", None)
    if isinstance(unet, nn.Module):
        out["diffusion"] = unet
    ae = getattr(getattr(backend, "autoencoder", None), "model", None)
    for part in ("encoder", "decoder"):  # encode / decode are methods, so hook the submodules
        if isinstance(getattr(ae, part, None), nn.Module):
            out[part] = getattr(ae, part)
    out["classifier"] = getattr(clf, "model", clf)
    return out
