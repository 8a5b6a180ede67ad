"""The cascade: how many images need DiffGuard, and seconds per image against running it on all.

With the band rule the baseline's score alone decides an image's tier; DiffGuard runs only on the hard cases (the
band between the ID-val quantiles ``low_q`` and ``high_q`` of the baseline). The veto rules (``veto``,
``veto-split``) also read DiffGuard in the confident-OOD tier up to their veto cap, so DiffGuard runs on every image
from ``low_q`` up to that cap. This script builds the guard of a fusion of a run config (default: the recommended
detector of ``fmnist6-full-spectrum``), fitted and calibrated on the config's ID-val images, then

1. scores every image of every test set with the baseline alone and counts the images that need DiffGuard (per set
   and over all);
2. on a seeded sample of test images of every set, times the guard twice -- DiffGuard on every image, then the
   cascade -- and checks that both give the same decisions and scores up to float32 rounding.

    OMP_WAIT_POLICY=PASSIVE bash scripts/with-tcmalloc.sh .venv/bin/python benchmarks/cascade.py \\
        --config fmnist6-full-spectrum --val-limit 500 --sample 16

Prints two Markdown tables and the machine. Validation sets are not scored: the tiers come from ID-val only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from diffguard.detectors.fusion import diffguard_input
from diffguard.guard.export import guard_from_config
from diffguard.guard.guard import Guard, rule_cascades
from diffguard.run.plan import select_rows
from diffguard.run.run_config import load_run_config
from diffguard.sysinfo import machine


def band_fractions(guard: Guard, runner, sets: list[str], batch: int) -> dict[str, tuple[int, int]]:
    """Per test set: (images, images whose baseline score needs DiffGuard: the band, and the vetoable range)."""
    baseline = guard.parts[guard.fusion_parts[0]]
    out = {}
    for name in sets:
        src = runner.sources[name]
        rows = np.arange(len(src))
        need = 0
        for i in range(0, len(rows), batch):
            x, ids = src.load(rows[i:i + batch]), src.ids[rows[i:i + batch]]
            need += int(guard.fusion.needs_diffguard(guard.part_scores(baseline, x, ids)).sum())
        out[name] = (len(rows), need)
    return out


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def sample(runner, sets: list[str], per_set: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ids = [], []
    for name in sets:
        src = runner.sources[name]
        rows = select_rows(len(src), per_set, 0, name)
        xs.append(src.load(rows))
        ids.append(src.ids[rows])
    return torch.cat(xs), torch.cat(ids)


def full_scores(guard: Guard, x: torch.Tensor, ids: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """The fused score with DiffGuard computed for every image (what the cascade must reproduce), and the seconds
    the baseline and DiffGuard took."""
    b_name, d_name = guard.fusion_parts
    t_b, b = timed(lambda: guard.part_scores(guard.parts[b_name], x, ids))
    t_d, d = timed(lambda: guard.part_columns(guard.parts[d_name], x, ids, guard.fusion.diffguard_columns))
    return guard.fusion.fuse(b, diffguard_input(guard.fusion, d)), t_b, t_d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="fmnist6-full-spectrum")
    p.add_argument("--method", default=None,
                   help="a band, veto or veto-split fusion key of the config (default: its recommended detector)")
    p.add_argument("--val-limit", type=int, default=500, help="ID-val images for calibration and the band")
    p.add_argument("--sample", type=int, default=16, help="timed images per test set")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = load_run_config(args.config)
    method = args.method or cfg.recommended
    if method is None:
        raise SystemExit(f"{args.config} names no recommended detector: pass --method KEY")
    fusions = {f.key: f for f in cfg.fusion}
    if method not in fusions or not rule_cascades(fusions[method].build()):
        cascading = sorted(k for k, f in fusions.items() if rule_cascades(f.build()))
        raise SystemExit(f"{method} is not a band or veto fusion of {args.config}, so nothing cascades (a method "
                         f"alone or the weighted rule runs DiffGuard on every image); choose one of {cascading}")
    guard, runner, source = guard_from_config(cfg, method, args.val_limit, args.batch_size, progress=True)
    guard.batch_size = args.batch_size
    sets = [s.name for s in runner.spec.by_role("id", "near", "far", "csid") if s.name in runner.sources]
    fractions = band_fractions(guard, runner, sets, 256)
    total, need = sum(n for n, _ in fractions.values()), sum(k for _, k in fractions.values())
    print(f"guard {guard.title} [{guard.name}]; calibrated on {source}; machine: {machine()}\n")
    print("| test set | images | need DiffGuard | share |\n|---|---:|---:|---:|")
    for name, (n, k) in fractions.items():
        print(f"| {name} | {n} | {k} | {100 * k / n:.1f} % |")
    print(f"| **all** | {total} | {need} | **{100 * need / total:.1f} %** |\n")
    x, ids = sample(runner, sets, args.sample)
    full, t_b, t_d = full_scores(guard, x, ids)
    t_all = t_b + t_d
    t_cascade, res = timed(lambda: guard.score(x, ids))
    same = bool(np.array_equal(res.is_ood, full > guard.threshold))
    close = float(np.max(np.abs(res.score - full) / np.maximum(np.abs(full), 1e-12)))
    n = len(x)
    print("| sample | images | DiffGuard ran | s / image, DiffGuard on all | s / image, cascade | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| {args.sample} per test set, seeded | {n} | {int(res.diffguard_ran.sum())} | {t_all / n:.3f} | "
          f"{t_cascade / n:.3f} | {t_all / t_cascade:.2f}x |\n")
    share = need / total
    projected = (t_b + share * t_d) / n
    print(f"Projected on all {total} test images (baseline on every image, DiffGuard on the {100 * share:.1f} % that "
          f"need it, at the sample's per-image costs): {projected:.3f} s / image against {t_all / n:.3f} with "
          f"DiffGuard on all ({t_all / n / projected:.2f}x).\n")
    print(f"same decisions: {same}; largest relative score difference: {close:.2e} (float32 rounding)")


if __name__ == "__main__":
    main()
