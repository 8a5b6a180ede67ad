"""Accuracy of the shipped fmnist6 classifier on the clean and covariate-shifted ID sets: the mixed sets (and their
test set per corruption kind) and every per-kind set ``<val|test>-csid-<kind>-<severity>``.

Usage: ``.venv/bin/python scripts/fmnist6_csid_accuracy.py`` (CPU, about a CPU-minute; the numbers are quoted in the
docstring of :mod:`diffguard.data.fmnist6`).
"""

from __future__ import annotations

import numpy as np
import torch

from diffguard.data.corruptions import CORRUPTIONS, SEVERITY_LEVELS, corrupt
from diffguard.data.fmnist6 import CSID_KIND_SETS, CSID_SEEDS, csid_kind_name, load_fmnist6
from diffguard.model_files import load_classifier


def predict(model: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Predicted classes of (N, 1, 28, 28) images in [-1, 1]."""
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])


def accuracies(model: torch.nn.Module, names: tuple[str, ...]) -> dict[str, float]:
    """Accuracy (%) of ``model`` on each fmnist6 set of ``names``."""
    sets = load_fmnist6(names)
    return {n: 100 * float((predict(model, s.images) == s.labels).float().mean()) for n, s in sets.items()}


def mixed_by_kind(model: torch.nn.Module) -> None:
    """``test-csid`` split by the kind each image drew."""
    sets = load_fmnist6(("test", "test-csid"))
    _, kinds = corrupt(sets["test"].images, sets["test"].ids, CSID_SEEDS["test-csid"])
    hit = (predict(model, sets["test-csid"].images) == sets["test-csid"].labels).numpy()
    for kind in CORRUPTIONS:
        m = np.array(kinds) == kind
        print(f"test-csid {kind:9s} n={int(m.sum()):5d}  accuracy {100 * float(hit[m].mean()):.2f} %")


def per_kind_table(acc: dict[str, float]) -> None:
    """The per-kind accuracies as the reST table of the :mod:`diffguard.data.fmnist6` docstring: a row per kind, a
    column per severity, each cell ``val-csid-<kind>-<sev>`` / ``test-csid-<kind>-<sev>`` accuracy (%)."""
    rule = "  " + "  ".join("=" * w for w in (8, *(15,) * len(SEVERITY_LEVELS)))
    head = "  ".join(f"{f'severity {s}':15s}" for s in SEVERITY_LEVELS)
    print(f"\n{rule}\n  {'kind':8s}  {head.rstrip()}\n{rule}")
    for kind in CORRUPTIONS:
        cells = [f"{acc[csid_kind_name('val', kind, s)]:.2f} / {acc[csid_kind_name('test', kind, s)]:.2f}"
                 for s in SEVERITY_LEVELS]
        print((f"  {kind:8s}  " + "  ".join(f"{c:15s}" for c in cells)).rstrip())
    print(rule)


def main() -> None:
    model = load_classifier()
    core = accuracies(model, ("val", "val-csid", "test", "test-csid"))
    for name, a in core.items():
        print(f"{name:10s} accuracy {a:.2f} %")
    mixed_by_kind(model)
    kinds = accuracies(model, tuple(CSID_KIND_SETS))
    for name, a in kinds.items():
        print(f"{name:22s} accuracy {a:.2f} %")
    per_kind_table(kinds)


if __name__ == "__main__":
    main()
