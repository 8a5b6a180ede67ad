"""Print the maximum errors of our pipeline against the authors' golden fixtures (../shared/fixtures/authors*).

Usage: python benchmarks/golden_errors.py [--skip-b]   (fixture B runs the 256 px pipeline: minutes on a laptop CPU)
It reuses the golden tests' setup, so the numbers are those the tests check against their tolerances.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


SCORES_B = (("l2", "score_l2", "1e-3"), ("gmsd", "score_gmsd", "1e-5"), ("logits_l1", "score_logits", "1e-3"))
SCORES_C = (("l2", "score_l2", "1e-4"), ("gmsd", "score_gmsd", "1e-6"), ("logits_l1", "score_logits", "1e-4"))


def line(what: str, ours: torch.Tensor, theirs: torch.Tensor, tol: str) -> None:
    d = (ours.float() - theirs.float()).abs()
    print(f"{what:34s} max {d.max().item():.3g}  mean {d.mean().item():.3g}   (tolerance {tol})")


def fixture_c() -> None:
    import test_golden_ldm as t

    from diffguard.classify.gradcam import grad_cam
    from diffguard.diffusion.ddim import ddim_invert, ddim_sample
    from diffguard.detectors.diffguard_presets import diffguard_detector

    backend, clf = t.build_ldm_parts()
    cam = t._load("C_ldm_cam.io.safetensors")
    x, y = cam["x_input"].float(), cam["pred_label"]
    with torch.no_grad():
        line("C z0", backend.encode(x), cam["z0"], "1e-4")
    up = torch.nn.functional.interpolate(grad_cam(clf, x, y)[:, None], size=(64, 64), mode="bilinear",
                                         align_corners=False)[:, 0]
    line("C cam_raw", up, cam["cam_raw"], "1e-6")
    for run in ("cam", "nocam"):
        io = t._load(f"C_ldm_{run}.io.safetensors")
        det = diffguard_detector(clf, backend, "ldm", steps=5, cam_cut=0.3 if run == "cam" else None,
                              distances=("l2", "gmsd", "logits_l1"))
        inv = det.inversion
        with torch.no_grad():
            z, lvl = ddim_invert(inv.eps_fn(backend), backend.encode(x), det.levels, inv.first, inv.cap, inv.variant)
            if run == "cam":
                line("C latent_inverted", z, cam["latent_inverted"], "1e-4")
        eps = det.guidance.build(backend, clf, x, y, det.generators(torch.arange(3)), (16, 16))
        with torch.no_grad():
            final = ddim_sample(eps, z, det.levels, lvl)
            idx = backend.autoencoder.quantize(final)[1]
        line(f"C[{run}] latent_final", final, io["latent_final"], "1e-3")
        print(f"C[{run}] quant_indices differing: {(idx != io['quant_indices']).sum().item()} (exact)")
        res = det.analyze(x)
        line(f"C[{run}] recon", res.synthesis, io["recon"], "max 1e-4, mean 1e-5")
        for n, k, tol in SCORES_C:
            line(f"C[{run}] {k}", -res.distances[n], io[k], tol)


def fixture_b() -> None:
    import test_golden_authors as t

    backend, clf = t.build_gdm_parts()
    _, rec, res, io = t.run_aux1(backend, clf)
    print("B pred", res.predicted.tolist(), "out_t", (res.stop_level - 2).tolist())
    psnr = torch.tensor([[v, io["psnr_trajectory"][lvl - 2, r].item()] for (lvl, r), v in rec.psnr.items()])
    line("B psnr_trajectory", psnr[:, 0], psnr[:, 1], "1e-3 dB")
    line("B latent_xT", torch.stack([rec.latent[b] for b in range(3)]), io["latent_xT"], "1e-3")
    line("B recon_guided_224 (aux1)", res.synthesis, io["recon_guided_224"], "max 1e-3, mean 1e-5")
    line("B recon_unguided_224 (aux1)", res.unguided, io["recon_unguided_224"], "max 1e-3, mean 1e-5")
    for n, k, tol in SCORES_B:
        line(f"B[aux1] {k}", -res.distances[n], io[k], tol)
    line("B g_first_step_sample0", t.first_guidance_gradient(backend, clf), io["g_first_step_sample0"], "1e-4")
    det0, _ = t._detector(backend, clf, "input")
    io0 = t._load("B_gdm_aux0.io.safetensors")
    res0 = det0.analyze(io["x_input"].float())
    print("B[aux0] pred", res0.predicted.tolist(), "out_t", (res0.stop_level - 2).tolist())
    line("B recon_guided_224 (aux0)", res0.synthesis, io0["recon_guided_224"], "max 1e-3, mean 1e-5")
    for n, k, tol in SCORES_B:
        line(f"B[aux0] {k}", -res0.distances[n], io0[k], tol)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-b", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fixture_c()
    if not args.skip_b:
        fixture_b()
