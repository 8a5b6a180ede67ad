"""Benchmark only: DiffGuard run with the authors' execution structure, side by side with the production path.

The authors' code (see ../shared/docs/reference/authors-code.md, section 7) computes the same numbers as diffguard's
production path but organises the work differently. This file re-enacts that organisation with diffguard's own
models, settings and formulas, so the two can be timed in one process and their scores compared:

* inversion is batched, but samples that stopped early keep being inverted (and tested by the early-stop rule, with
  the reference recomputed) until every sample of the batch has stopped;
* denoising under early stop runs one image at a time (batch 1; batch 2 with the unguided reference trajectory);
* the guidance function calls the diffusion network a second time on the guided image, with autograd on (the graph
  is built and never used), and derives x0-hat from that second call;
* the classifier sees the cutouts of one image per call.

For CFG (+ DSG) guidance the authors' path (their LDM) is batched as production is: one fused network call on 2B
rows per step, no early stop (section 7.1). Its re-enactment is production plus the two extra classifier forwards
on the input that the authors' code makes to save features (section 7.2).

Not re-enacted: cuDNN switched off (GPU only), per-call metric construction and distributed barriers.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/authors_structure.py --preset fmnist6-clean-grad --n 64 --threads 2

Speed at equal quality (issue 13, point 7): ``--fast PRESET`` also times production with another preset on the
same images, alternating batch by batch with the authors' structure of ``--preset``, and prints the ratio (which
settings have equal validation AUROC is the tuning report's business, docs/tuning.md):

    python benchmarks/authors_structure.py --preset fmnist6-cfg --fast fmnist6-fast --n 64 --threads 2

``--fast`` repeats, and takes dotted overrides after a colon (``fmnist6-cfg:inversion.steps=25,inversion.cap=15``).

Prints one Markdown table and writes ``authors_structure.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from diffguard.detectors.diffguard import DiffGuard
from diffguard.diffusion.inversion import null_eps
from diffguard.distances.combined import combined_score, score_names
from diffguard.guidance.clean_grad import ClassifierGuidance, LatentClassifier
from diffguard.guidance.dsg import CFGGuidance
from diffguard.diffusion.ddim import StopRule, ddim_step
from diffguard.guidance.clean_grad import class_log_prob, clip_eps
from diffguard.guidance.cutout import Cutouts
from diffguard.perf.counting import NetworkCounter
from diffguard.perf.throughput import network_modules


def authors_scores(det: DiffGuard, x: Tensor, ids: Tensor, stop: StopRule | None = None) -> dict[str, Tensor]:
    """Every distance of ``det`` (B,) for images x (B, C, H, W) in [-1, 1], computed in the authors' structure.

    ``stop``: the early-stop rule to re-evaluate on all samples at every step (default: the detector's own; pass
    an uncached one to re-enact the recomputed reference features).
    """
    if isinstance(det.guidance, CFGGuidance):
        return authors_scores_cfg(det, x, ids)
    if not isinstance(det.guidance, ClassifierGuidance) or det.guidance.gradient != "mixed":
        raise ValueError("the re-enactment covers Clean-Grad guidance with gradient='mixed' (the authors' GDM) "
                         "and CFG guidance (their LDM)")
    if det.label_mode != "predicted":
        raise ValueError("the re-enactment covers label_mode='predicted'")
    with torch.no_grad():
        logits = det.classifier.logits(x)
        det.classifier.logits(x)  # the authors run the input through the classifier twice
    y = logits.argmax(1)
    z, stop_level = invert_all_running(det, x, det.inversion.stop if stop is None else stop)
    start = (stop_level + det.inversion.start_offset).clamp_max(len(det.levels) - 1)
    both = det.reference == "unguided"
    synth, unguided = [], []
    for b in range(x.shape[0]):  # denoising one image at a time
        out = denoise_one(det, z[b:b + 1], y[b:b + 1], int(start[b]), int(ids[b]), both)
        synth.append(out[:1])
        unguided.append(out[1:])
    with torch.no_grad():
        synth_t = det.backend.decode(torch.cat(synth))
        ref = det.backend.decode(torch.cat(unguided)) if both else x
        return {n: d(ref, synth_t) for n, d in det._dist.items()}


def authors_scores_cfg(det: DiffGuard, x: Tensor, ids: Tensor) -> dict[str, Tensor]:
    """The authors' CFG (+ DSG) structure: production's batched work (prediction, Grad-CAM, inversion, fused 2B
    denoising) plus two more classifier forwards on the input (their feature saving). (B,) per distance."""
    with torch.no_grad():
        for _ in range(2):
            det.classifier.logits(x)
    return det.analyze(x, ids=ids).distances


def invert_all_running(det: DiffGuard, x: Tensor, stop: StopRule | None) -> tuple[Tensor, Tensor]:
    """Batched DDIM inversion that keeps stopped samples running until all have stopped (or the cap)."""
    inv, lv = det.inversion, det.levels
    last = len(lv) - 1 if inv.cap is None else inv.cap
    shift = 1 if inv.variant == "shifted" else 0
    with torch.no_grad():
        z0 = det.backend.encode(x)
        eps = inv.eps_fn(det.backend)
        everyone = torch.arange(x.shape[0], device=x.device)
        xt, kept = z0.clone(), z0.clone()
        level = torch.full((x.shape[0],), last, dtype=torch.long, device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for j in range(inv.first, last):
            t = lv.timesteps[j + shift].to(x.device).expand(x.shape[0])
            xt = ddim_step(xt, eps(xt, t, everyone), lv.alphas[j], lv.alphas[j + 1])
            if stop is not None and j + 1 < last:
                hit = stop(xt, z0, everyone, j + 1)  # evaluated for every sample, stopped ones included
                new = hit & ~done
                kept[new], level[new] = xt[new], j + 1
                done |= hit
                if bool(done.all()):
                    break
        kept[~done] = xt[~done]
    return kept, level


def denoise_one(det: DiffGuard, z: Tensor, y: Tensor, start: int, sample_id: int, both: bool) -> Tensor:
    """DDIM sampling of one latent (1, C, H, W) from level ``start`` with Clean-Grad guidance towards y (1,);
    with ``both`` the unguided trajectory runs in the same network call (batch 2). Returns (1 or 2, C, H, W)."""
    spec, backend, lv = det.guidance, det.backend, det.levels
    clf = LatentClassifier(det.classifier, backend) if getattr(backend, "is_latent", False) else det.classifier
    out = spec.crop_out or getattr(det.classifier, "resolution", None)
    cuts = Cutouts(spec.cutouts if spec.cutouts else 0, spec.cut_size,
                   out_size=out[0] if isinstance(out, tuple) else out)
    gens = det.generators(torch.tensor([sample_id]))  # the generator is reset for every image
    acp = backend.alphas_cumprod.to(z.device).double()
    eps = null_eps(backend)
    xb = torch.cat([z, z]) if both else z.clone()
    for j in range(start, 0, -1):
        t = lv.timesteps[j].to(z.device).expand(xb.shape[0])
        a = acp[t]
        sa = a.sqrt().to(xb.dtype).view(-1, 1, 1, 1)
        s1 = (1 - a).sqrt().to(xb.dtype).view(-1, 1, 1, 1)
        with torch.no_grad():
            e = eps(xb, t, torch.arange(xb.shape[0], device=xb.device))  # the sampler's call
        g = torch.zeros_like(xb)
        if spec.scale != 0:
            g[:1] = cond_fn(eps, clf, xb[:1], t[:1], y, sa[:1], s1[:1], cuts, gens, spec.use_x0_hat)
        e_c = clip_eps(xb, e, sa, s1) if spec.clip_x0 else e
        xb = ddim_step(xb, e_c - s1 * (spec.scale * g), lv.alphas[j], lv.alphas[j - 1]).detach()
    return xb


def cond_fn(eps, clf, x: Tensor, t: Tensor, y: Tensor, sa: Tensor, s1: Tensor, cuts: Cutouts,
            gens: list[torch.Generator], use_x0_hat: bool) -> Tensor:
    """The authors' guidance function: a second network call with autograd on, x~ from it, gradient w.r.t. x~."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        e2 = eps(x_in, t, torch.arange(1, device=x.device))  # duplicate call; its graph is kept alive and never used
        x_tilde = s1 * (x_in - s1 * e2) / sa + (1 - s1) * x_in if use_x0_hat else x_in
        leaf = x_tilde.detach().requires_grad_(True)
        loss = class_log_prob(clf, leaf, y, cuts, gens)
        (grad,) = torch.autograd.grad(loss, leaf)
    return grad


def _sync(x: Tensor) -> None:
    """Wait for the device (CUDA work is asynchronous; a timer must not stop before it ends)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def side_by_side(det: DiffGuard, x: Tensor, batch_size: int) -> dict:
    """Time production and re-enactment batch by batch (alternating, so load changes hit both alike)."""
    det.analyze(x[:2])
    authors_scores(det, x[:1], torch.arange(1))  # warm-up
    t_prod = t_auth = 0.0
    prod: dict[str, list[Tensor]] = {n: [] for n in det.distances}
    auth: dict[str, list[Tensor]] = {n: [] for n in det.distances}
    counters = {k: NetworkCounter(network_modules(det), keep_inputs=False) for k in ("production", "authors")}
    for i in range(0, x.shape[0], batch_size):
        xb, ids = x[i:i + batch_size], torch.arange(i, min(i + batch_size, x.shape[0]))
        with counters["production"]:
            _sync(xb)
            t0 = time.perf_counter()
            res = det.analyze(xb, ids=ids)
            _sync(xb)
            t1 = time.perf_counter()
        with counters["authors"]:
            t2 = time.perf_counter()
            a = authors_scores(det, xb, ids)
            _sync(xb)
            t_auth += time.perf_counter() - t2
        t_prod += t1 - t0
        for n in det.distances:
            prod[n].append(res.distances[n])
            auth[n].append(a[n])
    prod_d, auth_d = ({k: torch.cat(v) for k, v in d.items()} for d in (prod, auth))
    diffs = {n: float((prod_d[n] - auth_d[n]).abs().max().cpu()) for n in det.distances}
    names, scales = score_names(det.score_distance), det.score_scales or {}
    score_diff = (combined_score(prod_d, names, scales) - combined_score(auth_d, names, scales)).abs().max()
    n = x.shape[0]
    return {"images": n, "production_s": t_prod, "authors_s": t_auth, "production_img_s": n / t_prod,
            "authors_img_s": n / t_auth, "speedup": t_auth / t_prod, "score": det.score_distance,
            "max_abs_diff_score": float(score_diff), "max_abs_diff": diffs,
            "evals_per_image": {k: {name: v / n for name, v in sorted(c.images().items())}
                                for k, c in counters.items()}}


def equal_quality(authors_det: DiffGuard, fast_dets: dict[str, DiffGuard], x: Tensor, batch_size: int) -> dict:
    """Seconds per image of ``authors_det`` in the authors' structure and of each of ``fast_dets`` in production, on
    the same images, alternating batch by batch (authors', then each fast setting); ``ratio`` = authors' time / the
    setting's time."""
    authors_scores(authors_det, x[:1], torch.arange(1))  # warm-up
    for det in fast_dets.values():
        det.analyze(x[:2])
    t_auth, t_fast = 0.0, dict.fromkeys(fast_dets, 0.0)
    for i in range(0, x.shape[0], batch_size):
        xb, ids = x[i:i + batch_size], torch.arange(i, min(i + batch_size, x.shape[0]))
        t0 = time.perf_counter()
        authors_scores(authors_det, xb, ids)
        _sync(xb)
        t_auth += time.perf_counter() - t0
        for name, det in fast_dets.items():
            t0 = time.perf_counter()
            det.analyze(xb, ids=ids)
            _sync(xb)
            t_fast[name] += time.perf_counter() - t0
    n = x.shape[0]
    return {"authors_s_per_image": t_auth / n,
            "fast": {name: {"s_per_image": t / n, "ratio": t_auth / t} for name, t in t_fast.items()}}


def parse_setting(text: str) -> tuple[str, list[str]]:
    """``PRESET`` or ``PRESET:KEY=VALUE,KEY=VALUE`` (dotted preset overrides) -> (preset, overrides)."""
    preset, _, rest = text.partition(":")
    return preset, [o for o in rest.split(",") if o]


def batch_sensitivity(det: DiffGuard, x: Tensor, batch_size: int) -> float:
    """Max abs difference of production scores between batches of ``batch_size`` and one image at a time."""
    ids = torch.arange(x.shape[0])
    batched = torch.cat([det.analyze(x[i:i + batch_size], ids=ids[i:i + batch_size]).score
                         for i in range(0, x.shape[0], batch_size)])
    single = torch.cat([det.analyze(x[i:i + 1], ids=ids[i:i + 1]).score for i in range(x.shape[0])])
    return float((batched - single).abs().max())


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import fmnist6_images

    from diffguard.backends.pixel_unet import PixelBackend
    from diffguard.classify.adapter import fmnist6_classifier
    from diffguard.devices import resolve_device, to_device
    from diffguard.detectors.diffguard_presets import diffguard_detector
    from diffguard.sysinfo import command_line, machine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="fmnist6-clean-grad")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="float64 keeps batch-size-dependent float32 rounding from being amplified by the guidance")
    p.add_argument("--fast", action="append", default=[], metavar="PRESET[:KEY=VALUE,...]",
                   help="also time production with this preset (with dotted overrides, e.g. "
                        "fmnist6-cfg:inversion.steps=25,inversion.cap=15) against the authors' structure of "
                        "--preset; repeat for several settings")
    p.add_argument("--batch-sensitivity", action="store_true",
                   help="also rerun production one image at a time and report how much its scores move")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (models and images are moved there)")
    p.add_argument("--out", type=Path, default=Path("runs/authors-structure"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device = resolve_device(args.device)
    clf, backend = fmnist6_classifier(), PixelBackend.from_folder()
    if dtype != torch.float32:
        clf.to(dtype), backend.unet.to(dtype)
    clf, backend = to_device(clf, device), to_device(backend, device)
    det = diffguard_detector(clf, backend, args.preset)
    x = fmnist6_images(args.n, args.data_root).to(device, dtype)
    row = {"preset": args.preset, "dtype": args.dtype, **side_by_side(det, x, args.batch_size)}
    if args.batch_sensitivity:
        row["production_batch1_max_abs_diff_score"] = batch_sensitivity(det, x, args.batch_size)
    if args.fast:
        fast = {text: diffguard_detector(clf, backend, *parse_setting(text)) for text in args.fast}
        row["equal_quality"] = equal_quality(det, fast, x, args.batch_size)
    record = {"command": command_line(), "machine": machine(), "device": str(device), "batch_size": args.batch_size,
              "rows": [row]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "authors_structure.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nproduction vs the authors' execution structure, n = {args.n}, batch {args.batch_size}\n")
    print("| preset | dtype | production img/s | authors' structure img/s | speed-up | max abs score diff |")
    print("|---|---|---|---|---|---|")
    print(f"| {row['preset']} | {row['dtype']} | {row['production_img_s']:.3f} | {row['authors_img_s']:.3f} | "
          f"{row['speedup']:.2f}x | {row['max_abs_diff_score']:.2e} ({row['score']}) |")
    if args.batch_sensitivity:
        print(f"\nproduction batch {args.batch_size} vs batch 1, max abs score difference: "
              f"{row['production_batch1_max_abs_diff_score']:.2e}")
    if args.fast:
        q = row["equal_quality"]
        print(f"\n| setting | structure | s / image | authors' {args.preset} / this |\n|---|---|---:|---:|\n"
              f"| {args.preset} | authors' | {q['authors_s_per_image']:.4f} | 1.00x |")
        for name, f in q["fast"].items():
            print(f"| {name} | production | {f['s_per_image']:.4f} | {f['ratio']:.2f}x |")
    print(f"\nnetwork evaluations per image: {row['evals_per_image']}")
    print(f"max abs difference per distance: {row['max_abs_diff']}\nmachine: {record['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
