"""``diffguard models check|members``: measure the quality of a classifier and diffusion model pair."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from diffguard.cli.options import add_common
from diffguard.data.fmnist6 import load_fmnist6
from diffguard.detectors.ensemble import ensemble_folders
from diffguard.errors import ConfigError
from diffguard.model_files import load_classifier
from diffguard.sysinfo import machine
from diffguard.train.model_cards import member_card, write_cards
from diffguard.train.model_check import (
    QualityCheck,
    classifier_accuracy,
    parse_model_spec,
    run_quality_check,
    train_folder,
)

SPEC_HELP = ("anything a run config's `{key}:` takes: a folder path, the name of a model shipped in the package "
             "({example}), or an inline YAML/JSON mapping such as {mapping} (default: the shipped one)")


def add(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="inspect the embedded models").add_subparsers(dest="what", required=True)
    p = models.add_parser("check", help="measure the quality figures of a classifier and diffusion model pair")
    add_common(p)
    p.add_argument("--data", default=None, metavar="BENCHMARK",
                   help="measure on this benchmark's ID test set: a benchmark definition YAML or a registered name "
                        "(default: fmnist6); pass the --classifier and --diffusion trained with the same --data")
    p.add_argument("--classifier", default=None, metavar="SPEC", help=SPEC_HELP.format(
        key="classifier", example="fmnist6-classifier-s1",
        mapping="'{type: torchvision, arch: resnet18, weights: w.pth, num_classes: 3}'"))
    p.add_argument("--diffusion", default=None, metavar="SPEC", help=SPEC_HELP.format(
        key="diffusion", example="fmnist6-diffusion-large",
        mapping="'{type: diffusers, folder: /ckpt/unet, null_label: 10}'"))
    p.add_argument("--out", type=Path, default=Path("runs/models-check"), help="folder for the table, JSON and PNG grid")
    p.add_argument("--n-recon", type=int, default=500, help="test images for the inversion/reconstruction PSNR")
    p.add_argument("--n-per-class", type=int, default=100, help="CFG samples per known class")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance scale (1 = conditional)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--write-cards", action="store_true",
                   help="also write MODEL_CARD.md into both model folders from their training record and these figures "
                        "(both models must be `diffguard train` folders)")
    m = models.add_parser("members", help="measure the Deep-Ensemble members (fmnist6-classifier-sN), write cards")
    add_common(m)
    for q in (p, m):
        q.set_defaults(run=run)


def _run_members(args: argparse.Namespace) -> int:
    """Test accuracy of every shipped Deep-Ensemble member (``fmnist6-classifier-sN``); writes their cards."""


    test = load_fmnist6(("test",), args.data_root)["test"]
    for folder in ensemble_folders()[1:]:
        acc = classifier_accuracy(load_classifier(folder), test.images, test.labels, 500, torch.device("cpu"))
        (folder / "MODEL_CARD.md").write_text(member_card(folder, acc, machine()))
        print(f"{folder.name}: test accuracy {acc:.2%} (card written)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.what == "members":
        return _run_members(args)
    check = QualityCheck(n_recon=args.n_recon, n_per_class=args.n_per_class, steps=args.steps,
                         cfg_scale=args.cfg_scale, seed=args.seed, batch_size=args.batch_size)
    classifier = parse_model_spec(args.classifier, "classifier")
    diffusion = parse_model_spec(args.diffusion, "diffusion")
    folders = train_folder(classifier, "classifier"), train_folder(diffusion, "diffusion")
    if args.write_cards and None in folders:
        raise ConfigError("--write-cards writes MODEL_CARD.md from the training record of a `diffguard train` folder; "
                          f"not one: {[k for k, f in zip(('--classifier', '--diffusion'), folders) if f is None]}")
    record = run_quality_check(check, args.out, classifier, diffusion, args.data_root, args.device, data=args.data)
    if args.write_cards:
        for path in write_cards(record, *folders):
            print(f"written: {path}")
    return 0
