"""A tiny on-disk user benchmark: 3 classes of coloured 16x16 RGB shapes in class folders, an image list and OOD
folders (``make_shapes``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
COLOURS = {"circle": (230, 40, 40), "square": (40, 200, 60), "triangle": (50, 80, 230)}

DEFINITION = """\
name: shapes
classes: [circle, square, triangle]
size: 16
channels: 3
notes: tiny synthetic test benchmark
sets:
  - {name: train, role: train, folder: data/train}
  - {name: val, role: val, folder: data/val}
  - {name: test, role: id, list: lists/test.txt, root: data}
  - {name: dim, role: csid, folder: data/dim}
  - {name: val-ood, role: val_ood, folder: data/val-ood}
  - {name: lines, role: near, folder: data/lines}
  - {name: noise, role: far, folder: data/noise}
"""


def shape_image(cls: str, rng: np.random.Generator, side: int = 16, dim: float = 1.0) -> Image.Image:
    """One RGB image of a class: a coloured shape at a random offset on a dark background."""
    im = Image.new("RGB", (side, side), (10, 10, 10))
    d = ImageDraw.Draw(im)
    o = int(rng.integers(0, 4))
    colour = tuple(int(c * dim) for c in COLOURS[cls])
    box = (2 + o, 2 + o, side - 5 + o, side - 5 + o)
    if cls == "circle":
        d.ellipse(box, fill=colour)
    elif cls == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    return im


def make_shapes(root: Path, n_train: int = 8, n_val: int = 2, n_test: int = 3) -> Path:
    """Write the benchmark under ``root`` (``data/``, ``lists/``, ``shapes.yaml``); returns the YAML path."""
    rng = np.random.default_rng(0)
    data = root / "data"
    for set_name, n, dim in (("train", n_train, 1.0), ("val", n_val, 1.0), ("test", n_test, 1.0), ("dim", 2, 0.5)):
        for cls in CLASSES:
            folder = data / set_name / cls
            folder.mkdir(parents=True)
            for i in range(n):
                shape_image(cls, rng, dim=dim).save(folder / f"{i:02d}.png")
    (data / "train" / "README.txt").write_text("not an image: ignored")
    lines = [f"test/{cls}/{i:02d}.png {c}" for c, cls in enumerate(CLASSES) for i in range(n_test)]
    (root / "lists").mkdir()
    (root / "lists" / "test.txt").write_text("\n".join(lines) + "\n")
    for set_name, n in (("val-ood", 2), ("lines", 3), ("noise", 3)):
        (data / set_name / "sub").mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            if set_name != "noise":
                arr[:] = 10
                arr[:, 2 * i + 3] = 255
            Image.fromarray(arr).save(data / set_name / ("sub" if i == 0 else ".") / f"{i}.png")
    (root / "shapes.yaml").write_text(DEFINITION)
    return root / "shapes.yaml"
