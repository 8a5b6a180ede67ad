"""Write a handful of fmnist6 images as PNG files for `make demo` to score with the exported guard.

    python scripts/demo_images.py OUT_DIR

Three ID test images (known classes), three near-OOD images (the held-out Fashion-MNIST classes), two far-OOD
digits and one uniform-noise image, each named after its source set, drawn with a fixed seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from diffguard.data.fmnist6 import load_fmnist6

PICKS = {"test": 3, "near-fmnist": 3, "far-digits": 2, "far-uniform": 1}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sets = load_fmnist6(tuple(PICKS))
    rng = np.random.default_rng(0)
    for name, count in PICKS.items():
        images = sets[name].images
        for k, i in enumerate(rng.choice(len(images), count, replace=False)):
            pixels = ((images[i, 0].numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(out / f"{name}-{k}.png")
    print(f"wrote {sum(PICKS.values())} images to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/demo-images"))
