"""The runtime's own Prometheus metrics, served beside MLServer's on its metrics port (``/metrics``).

* ``diffguard_images_scored_total{model_name, model_version, predicted_class}`` -- images scored;
* ``diffguard_images_flagged_total{model_name, model_version, predicted_class}`` -- of those, flagged OOD;
* ``diffguard_batch_images{model_name, model_version}`` -- histogram of the images per scoring call (adaptive
  batching at work: with concurrent clients its mean exceeds the images per request).

``predicted_class`` is the classifier's label (an integer, as in the ``label`` output). The metrics are
``prometheus_client`` collectors in its default registry: that is what MLServer 1.7.1 serves without parallel
workers (``mlserver.register`` / ``mlserver.log`` keep their histograms in a registry it serves only with parallel
workers, and take no labels of our own). With parallel workers MLServer switches ``prometheus_client`` to its
multi-process mode before a worker loads a model, and these collectors, created lazily at load, follow it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Histogram

MODEL_LABELS = ("model_name", "model_version")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, float("inf"))


@dataclass(frozen=True)
class GuardMetrics:
    """The collectors (one set per process, shared by every model it serves)."""

    scored: Counter
    flagged: Counter
    batch_images: Histogram


_METRICS: list[GuardMetrics] = []


def guard_metrics() -> GuardMetrics:
    """The process's collectors, created on first use (after MLServer has chosen the metrics mode)."""
    if not _METRICS:
        _METRICS.append(GuardMetrics(
            scored=Counter("diffguard_images_scored", "Images scored by the guard, by predicted class",
                           [*MODEL_LABELS, "predicted_class"]),
            flagged=Counter("diffguard_images_flagged", "Images flagged OOD by the guard, by predicted class",
                            [*MODEL_LABELS, "predicted_class"]),
            batch_images=Histogram("diffguard_batch_images", "Images per scoring call (adaptive batching)",
                                   list(MODEL_LABELS), buckets=BATCH_BUCKETS)))
    return _METRICS[0]


def count_images(name: str, version: str | None, label: np.ndarray, is_ood: np.ndarray) -> None:
    """Add one request's images to the scored and flagged counters of their predicted classes."""
    metrics = guard_metrics()
    classes, scored = np.unique(label, return_counts=True)
    for cls, n in zip(classes.tolist(), scored.tolist()):
        labels = {"model_name": name, "model_version": version or "", "predicted_class": str(cls)}
        metrics.scored.labels(**labels).inc(n)
        metrics.flagged.labels(**labels).inc(int(is_ood[label == cls].sum()))


def observe_batch(name: str, version: str | None, n_images: int) -> None:
    """Record the size of one scoring call."""
    guard_metrics().batch_images.labels(model_name=name, model_version=version or "").observe(n_images)
