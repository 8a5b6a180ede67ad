"""``diffguard train classifier|diffusion``: train the models DiffGuard needs (resumable, seeded), on fmnist6 or,
with ``--data BENCHMARK.yaml``, on the ``train`` set(s) of a user benchmark."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from diffguard.cli.options import add_common
from diffguard.train.train_classifier import ClassifierTrainConfig, train_classifier
from diffguard.train.train_diffusion import DiffusionTrainConfig, train_diffusion
import torch

DEFAULT_CKPT_ROOT = Path("runs")


def _add_config_flags(p: argparse.ArgumentParser, cfg_cls: type) -> None:
    """One ``--flag`` per scalar field of a training config dataclass (defaults shown in --help)."""
    for f in fields(cfg_cls):
        default = f.default
        if isinstance(default, tuple):
            p.add_argument("--" + f.name.replace("_", "-"), type=_int_tuple, default=default,
                           help=f"comma-separated integers (default: {','.join(map(str, default))})")
            continue
        kind = {int: int, float: float, str: str}.get(type(default), int)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default, help=f"(default: {default})")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 48,96,96, got {text!r}") from None


def add(sub: argparse._SubParsersAction) -> None:

    train = sub.add_parser("train", help="train a classifier or diffusion model (fmnist6 or your own data)"
                           ).add_subparsers(dest="what", required=True)
    for name, cfg_cls in (("classifier", ClassifierTrainConfig), ("diffusion", DiffusionTrainConfig)):
        p = train.add_parser(name, help=f"train the {name} on fmnist6 or a benchmark's train set (resumable)")
        add_common(p)
        p.add_argument("--data", default=None, metavar="BENCHMARK",
                       help="train on the 'train' set(s) of this benchmark: a benchmark definition YAML (images up "
                            "to 64x64, grey or RGB) or a registered name (default: fmnist6)")
        p.add_argument("--out", type=Path, required=True, help="folder for the final model files")
        p.add_argument("--ckpt-dir", type=Path, default=None,
                       help=f"folder for the resumable checkpoint (default: {DEFAULT_CKPT_ROOT}/train-{name})")
        p.add_argument("--max-minutes", type=float, default=None,
                       help="checkpoint and stop after this much wall time; rerun the same command to resume")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
        _add_config_flags(p, cfg_cls)
        p.set_defaults(cfg_cls=cfg_cls, run=run)


def run(args: argparse.Namespace) -> int:

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = args.cfg_cls(**{f.name: getattr(args, f.name) for f in fields(args.cfg_cls) if hasattr(args, f.name)})
    ckpt = args.ckpt_dir or DEFAULT_CKPT_ROOT / f"train-{args.what}"
    fn = train_classifier if args.what == "classifier" else train_diffusion
    done = fn(cfg, args.out, ckpt, args.data_root, args.device, args.max_minutes, data=args.data)
    print(f"finished: model written to {args.out}" if done
          else f"stopped after --max-minutes; checkpoint in {ckpt}. Rerun the same command to resume.")
    return 0


