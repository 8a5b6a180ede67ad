"""``diffguard train classifier``: the classifier-under-protection (a small ResNet-18-style CNN), on fmnist6 or, with
``--data BENCHMARK.yaml``, on the ``train`` set(s) of a user benchmark (any size up to 64x64, grey or RGB)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from diffguard.model_files import save_classifier
from diffguard.nets.resnet import SmallResNet
from diffguard.sysinfo import command_line, machine
from diffguard.train.common import (
    RunState,
    batch_indices,
    cosine_lr,
    pick_device,
    resume,
    save_checkpoint,
    step_generator,
    train_loop,
    training_data,
)


@dataclass
class ClassifierTrainConfig:
    """Every option that changes the trained weights (the checkpoint refuses to resume under different ones)."""

    seed: int = 0
    steps: int = 3000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: int = 100
    width: int = 16
    pad: int = 2
    limit: int | None = None  # use only the first N training images (tests)


def augment(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (background -1 fills) and random horizontal flip.

    x: (B, C, H, W) in [-1, 1]; returns the same shape.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    out = torch.stack([padded[i, :, int(dy) : int(dy) + h, int(dx) : int(dx) + w] for i, (dy, dx) in enumerate(offs)])
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def train_classifier(
    cfg: ClassifierTrainConfig, out: Path, ckpt_dir: Path, data_root: str | None = None, device: str = "auto",
    max_minutes: float | None = None, ckpt_every: int = 200, data: str | os.PathLike[str] | None = None,
) -> bool:
    """Train (or resume from ``ckpt_dir``) the classifier; write the final weights to ``out`` when done.

    ``data``: a benchmark (definition YAML or registered name) whose ``train`` set(s) to train on; None = fmnist6.
    Returns True when training finished, False when it stopped after ``max_minutes`` (rerun to resume).
    """
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    td = training_data(data, data_root, cfg.limit)
    x_all, y_all = td.images, td.labels
    model = SmallResNet(td.num_classes, in_channels=td.channels, width=cfg.width).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    state, _ = resume(ckpt_dir, cfg, model, opt, td.record)
    model.train()

    def step_fn(step: int) -> float:
        idx = batch_indices(x_all.shape[0], cfg.batch_size, cfg.seed, step)
        x = augment(x_all[idx], cfg.pad, step_generator(cfg.seed, step)).to(dev)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * cosine_lr(step, cfg.steps, cfg.warmup)
        loss = F.cross_entropy(model(x), y_all[idx].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def save(st: RunState) -> None:
        save_checkpoint(ckpt_dir, cfg, st, {"model": model.state_dict(), "optimizer": opt.state_dict()}, td.record)

    done = train_loop(step_fn, state, cfg.steps, save, ckpt_every, max_minutes, "classifier")
    if done:
        train = {"config": cfg.__dict__, "wall_s": state.wall_s, "steps": state.step, "device": str(dev),
                 "machine": machine(), "command": command_line()}
        if td.record is not None:
            train["data"] = {**td.record, "definition": str(data)}
        save_classifier(model.eval().cpu(), out, extra={"train": train}, resolution=td.size,
                        class_names=td.class_names)
    return done
