"""Write a handful of fmnist6 images as PNG files for `make demo` to score with the exported guard.

    python scripts/demo_images.py OUT_DIR [--per-set N]

Three ID test images (known classes), three near-OOD images (the held-out Fashion-MNIST classes), two far-OOD
digits and one uniform-noise image, each named after its source set, drawn with a fixed seed; ``--per-set N`` writes
N of each instead (``benchmarks/serve_load.py --images`` uses 48).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from diffguard.data.fmnist6 import load_fmnist6

PICKS = {"test": 3, "near-fmnist": 3, "far-digits": 2, "far-uniform": 1}


def main(out: Path, per_set: int | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sets = load_fmnist6(tuple(PICKS))
    rng = np.random.default_rng(0)
    picks = {name: per_set or count for name, count in PICKS.items()}
    for name, count in picks.items():
        images = sets[name].images
        for k, i in enumerate(rng.choice(len(images), count, replace=False)):
            pixels = ((images[i, 0].numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(out / f"{name}-{k}.png")
    print(f"wrote {sum(picks.values())} images to {out}")


if __name__ == "__main__":
    args = sys.argv[1:]
    n = int(args[args.index("--per-set") + 1]) if "--per-set" in args else None
    main(Path(next((a for a in args if not a.startswith("--") and not a.isdigit()), "results/demo-images")), n)
