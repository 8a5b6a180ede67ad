"""Accuracy of the shipped fmnist6 classifier on the clean and covariate-shifted ID sets, and per corruption kind.

Usage: ``.venv/bin/python scripts/fmnist6_csid_accuracy.py`` (CPU, about two CPU-minutes; the numbers are quoted in the
docstring of :mod:`diffguard.data.fmnist6`).
"""

from __future__ import annotations

import numpy as np
import torch

from diffguard.data.corruptions import CORRUPTIONS, corrupt
from diffguard.data.fmnist6 import CSID_SEEDS, load_fmnist6
from diffguard.model_files import load_classifier


def predict(model: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Predicted classes of (N, 1, 28, 28) images in [-1, 1]."""
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])


def main() -> None:
    sets = load_fmnist6(("val", "val-csid", "test", "test-csid"))
    model = load_classifier()
    preds = {name: predict(model, s.images) for name, s in sets.items()}
    for name, s in sets.items():
        print(f"{name:10s} n={len(s):5d}  accuracy {100 * float((preds[name] == s.labels).float().mean()):.2f} %")
    _, kinds = corrupt(sets["test"].images, sets["test"].ids, CSID_SEEDS["test-csid"])
    hit = (preds["test-csid"] == sets["test-csid"].labels).numpy()
    for kind in CORRUPTIONS:
        m = np.array(kinds) == kind
        print(f"test-csid {kind:9s} n={int(m.sum()):5d}  accuracy {100 * float(hit[m].mean()):.2f} %")


if __name__ == "__main__":
    main()
