"""``diffguard train classifier|diffusion``: train the models DiffGuard needs (resumable, seeded), on fmnist6 or,
with ``--data BENCHMARK.yaml``, on the ``train`` set(s) of a user benchmark."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import fields
from pathlib import Path

import torch

from diffguard.cli.options import add_common
from diffguard.train.train_classifier import ClassifierTrainConfig, train_classifier
from diffguard.train.train_diffusion import DiffusionTrainConfig, train_diffusion

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
    had_model = _has_model(args.what, args.out)
    done = fn(cfg, args.out, ckpt, args.data_root, args.device, args.max_minutes, data=args.data)
    print(f"finished: model written to {args.out}" if done else stopped_message(args, ckpt, had_model))
    return 0


MODEL_FILES = {"classifier": "config.json", "diffusion": "diffguard.json"}  # what a finished training writes last


def _has_model(what: str, out: Path) -> bool:
    return (out / MODEL_FILES[what]).is_file()


def stopped_message(args: argparse.Namespace, ckpt: Path, had_model: bool) -> str:
    """What a run stopped by ``--max-minutes`` tells: no model in ``--out`` yet, where the progress is, and the
    command that finishes the training."""
    before = (f"{args.out} still holds an older model, not this training's result: do not use it as this run's model"
              if had_model else f"{args.out} holds no usable model")
    return (f"stopped after --max-minutes {args.max_minutes:g}: training is NOT finished and no model was written to "
            f"--out yet ({before}).\nThe progress is saved in the checkpoint {ckpt}. To finish, rerun the same "
            "command (from the same folder); it resumes from the checkpoint, trains for up to "
            f"{args.max_minutes:g} more minutes each time, and writes the model to {args.out} when the last step is "
            "done (leave out --max-minutes to train to the end in one go):\n"
            f"  {rerun_command(args)}")


def rerun_command(args: argparse.Namespace) -> str:
    """The ``diffguard train`` command of this run: its options, and every training option that is not the
    default (the checkpoint resumes only under the same configuration)."""
    parts = ["diffguard", "train", args.what]
    given = {"--data": args.data, "--out": args.out, "--ckpt-dir": args.ckpt_dir, "--data-root": args.data_root,
             "--device": None if args.device == "auto" else args.device, "--max-minutes": args.max_minutes,
             "--threads": args.threads}
    for flag, value in given.items():
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for f in fields(args.cfg_cls):
        value = getattr(args, f.name)
        if repr(value) != repr(f.default):  # repr: an explicit 1 for a True default is another configuration
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            parts += ["--" + f.name.replace("_", "-"), shown]
    return shlex.join(parts)


