"""Covariate shifts that are in no set of the repository: does a run's detector flag known images it should keep?

Issue 21: the recommended detector should not flag covariate-shifted ID images -- images of the known classes,
mildly changed, that the classifier still mostly classifies right. The benchmark's own covariate-shift sets
(``test-csid-*``: blur, noise, 1-4 px shift, contrast, JPEG; :mod:`diffguard.data.corruptions`) were in view while
methods were chosen, so this script makes shifts of other kinds. It takes the first ``--n`` images of the fmnist6
ID **test** set (the first rows, not a draw: the probe chooses nothing), changes every image with one seeded shift
of :data:`SHIFTS` (the generator of an image is seeded by (``--seed``, the shift's place in :data:`SHIFTS`, the
image's id), so a shifted image does not depend on ``--n`` or the batch), and reports, per shift, the protected
classifier's accuracy (is the image still known?) and each method's share of flagged images at the run's own 95 %-TPR
threshold (exported exactly as ``diffguard export`` does). ``clean`` (no change) is the reference: about 5 % for
every method (ID test against a threshold that keeps 95 % of ID-val). Nothing here chooses a setting.

    OMP_WAIT_POLICY=PASSIVE bash scripts/with-tcmalloc.sh python benchmarks/unseen_shifts.py \\
        --run results/fmnist6-tuned-demo --n 200 --threads 2

KINDS (images (N, 1, 28, 28) in [-1, 1], background -1; every result clamped to [-1, 1]; "±" = the sign drawn
per image):

=============  ===================================================================================================
shift          what is done to each image
=============  ===================================================================================================
clean          nothing (the reference row)
rotate-8       rotation by ±8° about the centre (bilinear, background -1 filling in)
rotate-15      rotation by ±15°
zoom-0.9       the image scaled by 0.9 about the centre (the garment smaller, background -1 around it)
zoom-0.8       scaled by 0.8
flip           left-right mirror (a mirrored garment is the same class)
gamma          gamma on the [0, 1] intensity u = (x + 1) / 2: u ** g, g = 0.7 or 1 / 0.7 (background and full
               white kept; the mid-tones lighter or darker)
pixelate-2     2 x 2 average pooling, then each pooled pixel repeated 2 x 2 (a 14 x 14 image shown at 28 x 28)
salt-pepper-1  1 % of the pixels (8 of 784), chosen at random, set to -1 or +1 (each with probability 1/2)
salt-pepper-3  3 % (24 of 784)
occlude-5      a 5 x 5 patch set to the background (-1), its corner uniform in rows / columns 4 .. 19 (on the garment
               as a rule, not on the frame's edge)
occlude-8      an 8 x 8 patch, corner in 4 .. 16
=============  ===================================================================================================

``--method`` takes method keys and fusion keys of the run (``vim-tuned``, ``diffguard-tuned+vim-tuned``,
``diffguard-tuned+mds:weighted``); default: the run's recommended detector and, for a fusion, its two parts. Each
distinct part (detector) scores every probe image once (:meth:`Guard.part_columns`: its score, calibrated as in the
run, and any DiffGuard distance a fusion rule reads); each
method's decision is then its fusion of those scores above its threshold -- DiffGuard is computed for every image, so
the decisions are those of :meth:`Guard.score`, whose cascade only skips DiffGuard where the fused score does not read
it. ``--check`` images are scored again by :meth:`Guard.score` and must get the same decisions. Prints one Markdown
table (shift, classifier accuracy, each method's flagged share, in %), the machine and the command; writes a JSON
record (every per-image part score included) to ``--out``/unseen_shifts.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffguard.detectors.fusion import diffguard_input

BACKGROUND = -1.0


@dataclass(frozen=True)
class Shift:
    """One covariate shift: ``op`` (the transform), ``level`` (its strength: degrees, scale, gamma magnitude,
    pooling factor, share of pixels or patch side) and the text of the table row."""

    op: str
    level: float
    label: str


SHIFTS: dict[str, Shift] = {
    "clean": Shift("clean", 0.0, "clean (none)"),
    "rotate-8": Shift("rotate", 8.0, "rotate ±8°"),
    "rotate-15": Shift("rotate", 15.0, "rotate ±15°"),
    "zoom-0.9": Shift("zoom", 0.9, "zoom ×0.9"),
    "zoom-0.8": Shift("zoom", 0.8, "zoom ×0.8"),
    "flip": Shift("flip", 0.0, "left-right flip"),
    "gamma": Shift("gamma", 0.7, "gamma 0.7 or 1/0.7"),
    "pixelate-2": Shift("pixelate", 2.0, "pixelate ×2"),
    "salt-pepper-1": Shift("salt-pepper", 0.01, "salt & pepper 1 %"),
    "salt-pepper-3": Shift("salt-pepper", 0.03, "salt & pepper 3 %"),
    "occlude-5": Shift("occlude", 5.0, "occlusion 5×5"),
    "occlude-8": Shift("occlude", 8.0, "occlusion 8×8"),
}
"""The probe's shifts by key, ``clean`` first (the module docstring's KINDS table says what each does)."""
OCCLUDE_MARGIN = 4  # px kept free of a patch's corner on the top / left and of its far side on the bottom / right


def image_rng(seed: int, key: str, image_id: int) -> np.random.Generator:
    """The generator of one image under one shift, seeded by (seed, the shift's place in SHIFTS, the image's id)."""
    return np.random.default_rng([seed, list(SHIFTS).index(key), int(image_id)])


def warp(x: Tensor, angles_deg: np.ndarray, scales: np.ndarray) -> Tensor:
    """x (N, C, H, W) in [-1, 1] rotated by ``angles_deg`` (N,) and scaled by ``scales`` (N,) about the centre,
    bilinear; what comes in from outside the frame is the background (-1). Returns (N, C, H, W) float32 in [-1, 1]."""
    a = torch.from_numpy(np.deg2rad(angles_deg)).float()
    s = torch.from_numpy(np.asarray(scales, dtype=np.float32))
    cos, sin = torch.cos(a) / s, torch.sin(a) / s  # output -> input coordinates: R(-a) / s
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(a)], 1),
                         torch.stack([sin, cos, torch.zeros_like(a)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x - BACKGROUND, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (moved + BACKGROUND).clamp(-1.0, 1.0)  # sampled as x + 1, so the zero padding is the background


def salt_pepper(x: Tensor, share: float, rngs: list[np.random.Generator]) -> Tensor:
    """x (N, C, H, W) with round(share * H * W) pixel positions of each image (all channels) set to -1 or +1."""
    n, c, h, w = x.shape
    out = x.clone().reshape(n, c, h * w)
    k = round(share * h * w)
    for i, g in enumerate(rngs):
        where = torch.from_numpy(g.choice(h * w, size=k, replace=False))
        out[i][:, where] = torch.from_numpy(np.where(g.random(k) < 0.5, -1.0, 1.0)).float()
    return out.reshape(n, c, h, w)


def occlude(x: Tensor, side: int, rngs: list[np.random.Generator]) -> Tensor:
    """x (N, C, H, W) with one side x side patch per image set to the background; its corner (row, column) uniform
    in [OCCLUDE_MARGIN, size - OCCLUDE_MARGIN - side]."""
    out = x.clone()
    h, w = x.shape[-2:]
    for i, g in enumerate(rngs):
        y0 = int(g.integers(OCCLUDE_MARGIN, h - OCCLUDE_MARGIN - side + 1))
        x0 = int(g.integers(OCCLUDE_MARGIN, w - OCCLUDE_MARGIN - side + 1))
        out[i, :, y0:y0 + side, x0:x0 + side] = BACKGROUND
    return out


def signs(rngs: list[np.random.Generator]) -> np.ndarray:
    """(N,) float64 of +1 / -1, one fair draw per image."""
    return np.array([1.0 if g.random() < 0.5 else -1.0 for g in rngs])


def shift_images(x: Tensor, ids: Tensor, key: str, seed: int = 0) -> Tensor:
    """The shift ``key`` of :data:`SHIFTS` applied to x (N, C, H, W) float32 in [-1, 1]; ``ids`` (N,) seed each
    image's draws (with ``seed``). Returns a new (N, C, H, W) float32 tensor in [-1, 1] (``clean``: x itself)."""
    shift = SHIFTS[key]
    if shift.op == "clean":
        return x
    rngs = [image_rng(seed, key, int(i)) for i in ids]
    n = x.shape[0]
    if shift.op == "rotate":
        out = warp(x, shift.level * signs(rngs), np.ones(n))
    elif shift.op == "zoom":
        out = warp(x, np.zeros(n), np.full(n, shift.level))
    elif shift.op == "flip":
        out = x.flip(-1)
    elif shift.op == "gamma":
        g = torch.from_numpy(shift.level ** signs(rngs)).float().view(-1, 1, 1, 1)
        out = ((x.clamp(-1.0, 1.0) + 1.0) / 2.0) ** g * 2.0 - 1.0
    elif shift.op == "pixelate":
        k = int(shift.level)
        out = F.interpolate(F.avg_pool2d(x, k), scale_factor=k, mode="nearest")
    elif shift.op == "salt-pepper":
        out = salt_pepper(x, shift.level, rngs)
    else:
        out = occlude(x, int(shift.level), rngs)
    return out.float().clamp(-1.0, 1.0)


# -- scoring ---------------------------------------------------------------------------------------------------------


def probe_images(source: Any, n: int, keys: list[str], seed: int) -> tuple[Tensor, Tensor, Tensor, np.ndarray]:
    """The first n images of the ID test source under every shift of ``keys``, stacked shift by shift.
    Returns x (len(keys) * n, C, H, W) in [-1, 1], ids (same rows), true labels, and each row's shift key."""
    rows = torch.arange(min(n, len(source)))
    clean, ids, labels = source.load(rows.tolist()), source.ids[rows].long(), source.labels[rows].long()
    x = torch.cat([shift_images(clean, ids, k, seed) for k in keys])
    return x, ids.repeat(len(keys)), labels.repeat(len(keys)), np.repeat(np.array(keys), len(rows))


def predictions(classifier: Any, x: Tensor, batch: int, device: torch.device) -> np.ndarray:
    """(N,) int64 labels the classifier predicts for x (N, C, H, W) in [-1, 1]."""
    with torch.no_grad():
        out = [classifier.logits(b.to(device)).argmax(1).cpu() for b in x.split(batch)]
    return torch.cat(out).numpy().astype(np.int64)


def distinct_parts(guards: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """(guard, Part) of every part name of the guards, the first guard that holds it (a run's exports of one method
    are the same: built by the same builder, calibrated on the same stored ID-val scores)."""
    out: dict[str, tuple[Any, Any]] = {}
    for guard in guards.values():
        for name, part in guard.parts.items():
            out.setdefault(name, (guard, part))
    return out


def needed_columns(guards: dict[str, Any]) -> dict[str, list[str]]:
    """Per part name, the columns some guard reads from it: ``"score"``, plus the DiffGuard columns
    (``dist:<name>``) of a fusion rule that reads them (veto-split)."""
    need: dict[str, list[str]] = {}
    for g in guards.values():
        for name in g.parts:
            need.setdefault(name, ["score"])
        if g.fusion is not None:
            dg = g.fusion_parts[1]
            need[dg] = list(dict.fromkeys([*need[dg], *g.fusion.diffguard_columns]))
    return need


def fused_scores(guard: Any, columns: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """(N,) float64 scores of a guard from its parts' columns (each (N,), the same images): the one part's score, or
    the fusion of (baseline, DiffGuard); ``> guard.threshold`` flags."""
    if guard.fusion is None:
        return columns[next(iter(guard.parts))]["score"]
    baseline, diffguard = guard.fusion_parts
    return guard.fusion.fuse(columns[baseline]["score"], diffguard_input(guard.fusion, columns[diffguard]))


def check_decisions(guards: dict[str, Any], x: Tensor, ids: Tensor, scores: dict[str, dict[str, np.ndarray]]) -> float:
    """Guard.score on x (K, C, H, W) must flag what the part columns (K,) of the same images, fused, flag; raises
    SystemExit naming the method otherwise. Returns the largest |score difference| seen."""
    worst = 0.0
    for key, guard in guards.items():
        result = guard.score(x, ids)
        mine = fused_scores(guard, scores)
        if not np.array_equal(result.is_ood, mine > guard.threshold):
            raise SystemExit(f"{key}: the fused part scores flag {np.flatnonzero(mine > guard.threshold)}, "
                             f"Guard.score flags {np.flatnonzero(result.is_ood)}")
        worst = max(worst, float(np.max(np.abs(result.score - mine))) if len(mine) else 0.0)
    return worst


def check_rows(shift_of: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` probe rows for the Guard.score check: the first image of each shift in turn, then the
    second, ... (so every shift is represented as far as ``count`` allows)."""
    keys = list(dict.fromkeys(shift_of))
    by_key = [np.flatnonzero(shift_of == k) for k in keys]
    order = [r[j] for j in range(max(map(len, by_key), default=0)) for r in by_key if j < len(r)]
    return np.array(order[:count], dtype=np.int64)


def open_run(folder: Path, data_root: str | None, device: str | None) -> tuple[Any, Any]:
    """(runner, store) of a finished results folder, its data read from ``data_root`` when given; models checked."""
    from diffguard.guard.export import check_models, read_json
    from diffguard.run.run_config import build_run_config
    from diffguard.run.runner import Runner
    from diffguard.run.store import ResultStore

    data = read_json(folder / "run_config.json")
    data.update({k: v for k, v in (("data_root", data_root), ("device", device)) if v})
    runner = Runner(build_run_config(data), folder, progress=False)
    if not (folder / "results.sqlite").is_file():
        raise SystemExit(f"{folder} has no results.sqlite; is it a folder written by `diffguard benchmark`?")
    check_models(runner, folder)
    return runner, ResultStore(folder / "results.sqlite")


def method_keys(runner: Any, store: Any, asked: list[str] | None) -> list[str]:
    """The asked keys, or the run's recommended method followed by the parts it fuses."""
    from diffguard.guard.export import default_method

    if asked:
        return list(dict.fromkeys(asked))
    name = default_method(runner, store)
    if name is None:
        raise SystemExit("the run names no recommended method and has no OOD-validation set; pass --method")
    fusion = {f.key: f for f in runner.cfg.fusion}.get(name)
    return [name, fusion.baseline, fusion.diffguard] if fusion else [name]


def summary_rows(keys: list[str], shift_of: np.ndarray, correct: np.ndarray,
                 flagged: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per shift: its key, the image count, the classifier's accuracy and each method's flagged share
    (fractions in [0, 1])."""
    rows = []
    for k in keys:
        m = shift_of == k
        rows.append({"shift": k, "n": int(m.sum()), "accuracy": float(correct[m].mean()),
                     "flagged": {name: float(f[m].mean()) for name, f in flagged.items()}})
    return rows


def table_rows(summary: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The summary rows as Markdown-table cells: the shift's label, accuracy and flagged shares in % (1 decimal)."""
    return [{"shift": SHIFTS[r["shift"]].label, "n": str(r["n"]), "classifier acc %": f"{100 * r['accuracy']:.1f}",
             **{f"{name} %": f"{100 * v:.1f}" for name, v in r["flagged"].items()}} for r in summary]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished `diffguard benchmark` results folder")
    p.add_argument("--method", action="append", default=None, metavar="KEY",
                   help="method or fusion key of the run (repeatable; default: recommended + its parts)")
    p.add_argument("--n", type=int, default=200, help="first N ID-test images, under every shift")
    p.add_argument("--shift", action="append", default=None, choices=list(SHIFTS),
                   help="shifts to probe (repeatable; default: all; clean is always included)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", type=int, default=4, help="images rescored by Guard.score to check the decisions")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default=None, help="default: the run's")
    p.add_argument("--out", default="runs/unseen-shifts", help="folder for unseen_shifts.json")
    args = p.parse_args(argv)

    from diffguard.atomic_files import atomic_write_text
    from diffguard.errors import ConfigError, UserError
    from diffguard.guard.export import export_from_run
    from diffguard.report.tables import markdown_table
    from diffguard.sysinfo import command_line, machine

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.run)
    try:
        runner, store = open_run(folder, args.data_root, args.device)
        with store:
            names = method_keys(runner, store, args.method)
            guards = {k: export_from_run(runner, store, k, folder) for k in names}
    except (ConfigError, UserError) as e:
        raise SystemExit(f"error: {e}") from None
    for g in guards.values():
        g.batch_size = args.batch_size
    keys = ["clean", *[k for k in dict.fromkeys(args.shift or SHIFTS) if k != "clean"]]
    source = runner.sources[runner.spec.by_role("id")[0].name]
    x, ids, labels, shift_of = probe_images(source, args.n, keys, args.seed)
    first = next(iter(guards.values()))
    pred = predictions(first.classifier, x, 256, first.device)

    scores, seconds, need = {}, {}, needed_columns(guards)
    for name, (guard, part) in distinct_parts(guards).items():
        t0 = time.perf_counter()
        scores[name] = guard.part_columns(part, x, ids, need[name])
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: {len(x)} images, {seconds[name]:.0f} s", file=sys.stderr)
    fused = {k: fused_scores(g, scores) for k, g in guards.items()}
    flagged = {k: fused[k] > g.threshold for k, g in guards.items()}
    chk = check_rows(shift_of, args.check)
    worst = check_decisions(guards, x[chk], ids[chk], {n: {c: v[chk] for c, v in cols.items()} for n, cols in scores.items()}) if len(chk) else 0.0

    rows = summary_rows(keys, shift_of, pred == labels.numpy(), flagged)
    print(f"\nrun {folder} ({runner.spec.name}); first {len(x) // len(keys)} ID-test images under each shift; share "
          f"flagged OOD (%, column per method) at each method's 95 %-TPR threshold of the run's ID-val; Guard.score agreed on "
          f"{len(chk)} images (largest score difference {worst:.2g})\n")
    print(markdown_table(table_rows(rows)))
    print(f"machine: {machine()}\ncommand: {command_line()}")
    record = {"command": command_line(), "machine": machine(), "run": str(folder), "seed": args.seed,
              "n_per_shift": len(x) // len(keys), "shifts": {k: vars(SHIFTS[k]) for k in keys},
              "methods": {k: {"title": g.title, "threshold": g.threshold, "parts": list(g.parts),
                              "fusion_rule": g.record.get("fusion_rule")} for k, g in guards.items()},
              "part_seconds": seconds, "checked_images": len(chk), "check_max_score_diff": worst, "rows": rows,
              "per_image": {"shift": shift_of.tolist(), "id": ids.tolist(), "label": labels.tolist(),
                            "prediction": pred.tolist(), "part_scores": {n: {c: v.tolist() for c, v in cols.items()} for n, cols in scores.items()}}}
    out = atomic_write_text(Path(args.out) / "unseen_shifts.json", json.dumps(record, indent=1))
    print(f"record: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
