"""The ``diffguard`` command line: ``benchmark``, ``score``, ``report``, ``train classifier|diffusion``,
``models check``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

DEFAULT_CKPT_ROOT = Path("runs")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help="folder with the Fashion-MNIST IDX files (default: $DIFFGUARD_DATA_ROOT, else "
                        "/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")


def _add_config_flags(p: argparse.ArgumentParser, cfg_cls: type) -> None:
    """One ``--flag`` per scalar field of a training config dataclass (defaults shown in --help)."""
    for f in fields(cfg_cls):
        default = f.default
        if isinstance(default, tuple):
            continue
        kind = {int: int, float: float, str: str}.get(type(default), int)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default, help=f"(default: {default})")


def _add_train(sub: argparse._SubParsersAction) -> None:
    from diffguard.train.classifier import ClassifierTrainConfig
    from diffguard.train.diffusion import DiffusionTrainConfig

    train = sub.add_parser("train", help="train an embedded fmnist6 model").add_subparsers(dest="what", required=True)
    for name, cfg_cls in (("classifier", ClassifierTrainConfig), ("diffusion", DiffusionTrainConfig)):
        p = train.add_parser(name, help=f"train the fmnist6 {name} (resumable)")
        _add_common(p)
        p.add_argument("--out", type=Path, required=True, help="folder for the final model files")
        p.add_argument("--ckpt-dir", type=Path, default=None,
                       help=f"folder for the resumable checkpoint (default: {DEFAULT_CKPT_ROOT}/train-{name})")
        p.add_argument("--max-minutes", type=float, default=None,
                       help="checkpoint and stop after this much wall time; rerun the same command to resume")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
        _add_config_flags(p, cfg_cls)
        p.set_defaults(cfg_cls=cfg_cls)


def _run_train(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = args.cfg_cls(**{f.name: getattr(args, f.name) for f in fields(args.cfg_cls) if hasattr(args, f.name)})
    ckpt = args.ckpt_dir or DEFAULT_CKPT_ROOT / f"train-{args.what}"
    if args.what == "classifier":
        from diffguard.train.classifier import train_classifier as fn
    else:
        from diffguard.train.diffusion import train_diffusion as fn
    done = fn(cfg, args.out, ckpt, args.data_root, args.device, args.max_minutes)
    print(f"finished: model written to {args.out}" if done
          else f"stopped after --max-minutes; checkpoint in {ckpt}. Rerun the same command to resume.")
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="inspect the embedded models").add_subparsers(dest="what", required=True)
    p = models.add_parser("check", help="measure the quality figures of the embedded models and print a table")
    _add_common(p)
    p.add_argument("--classifier", type=Path, default=None, help="classifier folder (default: the shipped one)")
    p.add_argument("--diffusion", type=Path, default=None, help="diffusion folder (default: the shipped one)")
    p.add_argument("--out", type=Path, default=Path("runs/models-check"), help="folder for the table, JSON and PNG grid")
    p.add_argument("--n-recon", type=int, default=500, help="test images for the inversion/reconstruction PSNR")
    p.add_argument("--n-per-class", type=int, default=100, help="CFG samples per known class")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance scale (1 = conditional)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--write-cards", action="store_true",
                   help="also write MODEL_CARD.md into both model folders from their training record and these figures")
    m = models.add_parser("members", help="measure the Deep-Ensemble members (fmnist6-classifier-sN), write cards")
    _add_common(m)


def _run_members(args: argparse.Namespace) -> int:
    """Test accuracy of every shipped Deep-Ensemble member (``fmnist6-classifier-sN``); writes their cards."""
    import torch

    from diffguard.cards import member_card
    from diffguard.data.fmnist6 import load_fmnist6
    from diffguard.detectors.ensemble import ensemble_folders
    from diffguard.models import load_classifier
    from diffguard.quality import classifier_accuracy
    from diffguard.sysinfo import machine

    test = load_fmnist6(("test",), args.data_root)["test"]
    for folder in ensemble_folders()[1:]:
        acc = classifier_accuracy(load_classifier(folder), test.images, test.labels, 500, torch.device("cpu"))
        (folder / "MODEL_CARD.md").write_text(member_card(folder, acc, machine()))
        print(f"{folder.name}: test accuracy {acc:.2%} (card written)")
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from diffguard.quality import QualityCheck, run_quality_check

    if args.what == "members":
        return _run_members(args)
    check = QualityCheck(n_recon=args.n_recon, n_per_class=args.n_per_class, steps=args.steps,
                         cfg_scale=args.cfg_scale, seed=args.seed, batch_size=args.batch_size)
    record = run_quality_check(check, args.out, args.classifier, args.diffusion, args.data_root, args.device)
    if args.write_cards:
        from diffguard.cards import write_cards
        from diffguard.models import shipped_path

        for path in write_cards(record, args.classifier or shipped_path("classifier"),
                                args.diffusion or shipped_path("diffusion")):
            print(f"written: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffguard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_models(sub)
    from diffguard.cli_eval import add_eval_commands

    add_eval_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from diffguard.data.fashion_mnist import DataNotFoundError
    from diffguard.data.idx import IdxError
    from diffguard.cli_eval import EVAL_COMMANDS, USER_ERRORS
    from diffguard.models import ModelFileError

    try:
        return {"train": _run_train, "models": _run_models, **EVAL_COMMANDS}[args.command](args)
    except (DataNotFoundError, IdxError, ModelFileError, *USER_ERRORS) as err:
        print(f"diffguard: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
