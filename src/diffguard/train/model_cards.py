"""Model cards for the embedded models, written from the training record and a ``models check`` record.

Nothing in a card is typed by hand: the command, seed, steps, wall time and machine come from the training record
stored in the model folder, the quality figures from ``quality.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffguard.train.model_check import format_table


def _benchmark(train: dict[str, Any]) -> str:
    """The benchmark a model was trained on (fmnist6 unless the record names one made with ``--data``)."""
    return train.get("data", {}).get("benchmark", "fmnist6")


def _data_line(train: dict[str, Any]) -> str:
    d = train.get("data")
    if d is None:
        return ("- data: fmnist6 `train` only (known classes 0-5 of the Fashion-MNIST training split minus the `val` "
                "hold-out)")
    return (f"- data: benchmark `{d['benchmark']}` ({d.get('definition', '')}), set(s) {', '.join(d['sets'])}: "
            f"{d['images']} images of {d['channels']}x{d['size']}x{d['size']}, sha256 {d['digest'][:12]}")


def _train_section(train: dict[str, Any]) -> list[str]:
    cfg = train["config"]
    return [
        "## How it was made",
        "",
        f"- command: `{train.get('command', 'not recorded')}`",
        f"- seed {cfg['seed']}, {train['steps']} steps of batch {cfg['batch_size']}",
        f"- wall time: {train['wall_s'] / 60:.1f} min of training steps on {train['device']}",
        f"- machine: {train.get('machine', 'not recorded')}",
        f"- full configuration: `{json.dumps(cfg, sort_keys=True)}`",
        _data_line(train),
        "- training resumes from its checkpoint when the same command is rerun (`--max-minutes` splits it in parts)",
        "",
    ]


def _quality_section(record: dict[str, Any]) -> list[str]:
    return [
        "## Measured quality",
        "",
        "Reproduce with `diffguard models check` (the README's demo command runs it).",
        "",
        format_table(record),
        "",
    ]


def classifier_card(folder: Path, record: dict[str, Any]) -> str:
    cfg = json.loads((folder / "config.json").read_text())
    bench = _benchmark(cfg["train"])
    head = [
        f"# {bench} classifier-under-protection",
        "",
        f"A ResNet-18-style CNN (`SmallResNet`, torchvision `BasicBlock`s, width {cfg['width']}, blocks "
        f"{cfg['blocks']}) for the {cfg['num_classes']} known {bench} classes: {', '.join(cfg['class_names'])}.",
        f"Input: (B, {cfg['in_channels']}, {cfg['resolution']}, {cfg['resolution']}) images in [-1, 1]; output: "
        f"{cfg['num_classes']} logits. "
        "Penultimate features: `features(x)`; Grad-CAM layer: `layer4`.",
        "Files: `config.json`, `model.safetensors`.",
        "",
    ]
    return "\n".join(head + _train_section(cfg["train"]) + _quality_section(record))


def diffusion_card(folder: Path, record: dict[str, Any]) -> str:
    info = json.loads((folder / "diffguard.json").read_text())
    unet = json.loads((folder / "unet" / "config.json").read_text())
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    head = [
        f"# {_benchmark(info['train'])} class-conditional pixel diffusion model",
        "",
        f"A diffusers `UNet2DModel` (channels {unet['block_out_channels']}, {unet['layers_per_block']} layer(s) per "
        f"block, blocks {unet['down_block_types']}) predicting eps for (B, {info['channels']}, {info['resolution']}, "
        f"{info['resolution']}) images in [-1, 1].",
        f"Class embedding with {unet['num_class_embeds']} rows: labels 0..{info['num_classes'] - 1} and the null "
        f"class {info['null_label']} (label dropout p = {info['train']['config']['p_uncond']} in training), so the "
        "same network gives the unconditional eps (classifier guidance, inversion) and the conditional one "
        "(classifier-free guidance). The weights are the EMA weights.",
        f"Schedule: {sched['beta_schedule']} betas {sched['beta_start']} to {sched['beta_end']}, "
        f"{sched['num_train_timesteps']} steps, stored in `scheduler/scheduler_config.json`.",
        "Files: `unet/` (diffusers folder, safetensors), `scheduler/`, `diffguard.json`.",
        "",
    ]
    return "\n".join(head + _train_section(info["train"]) + _quality_section(record))


def write_cards(record: dict[str, Any], classifier_dir: Path, diffusion_dir: Path) -> list[Path]:
    """Write ``MODEL_CARD.md`` into both model folders; returns the paths written."""
    out = []
    for folder, make in ((classifier_dir, classifier_card), (diffusion_dir, diffusion_card)):
        path = folder / "MODEL_CARD.md"
        path.write_text(make(folder, record))
        out.append(path)
    return out


def member_card(folder: Path, accuracy: float, machine: str) -> str:
    """Card of a Deep-Ensemble member: the shipped classifier's command with another seed, and its test accuracy."""
    cfg = json.loads((folder / "config.json").read_text())
    head = [
        f"# fmnist6 Deep-Ensemble member (seed {cfg['train']['config']['seed']})",
        "",
        "The fmnist6 classifier architecture and training command with another seed; with the shipped classifier it "
        "forms the Deep Ensemble baseline (MSP of the mean logits). Same input, output, features and CAM layer as "
        "`fmnist6-classifier`. Files: `config.json`, `model.safetensors`.",
        "",
    ]
    quality = ["## Measured quality", "", "Reproduce with `diffguard models members`.", "",
               "| figure | measured |", "|---|---|",
               f"| classifier accuracy, fmnist6 test (6000 images) | {accuracy:.2%} |", "", f"machine: {machine}", ""]
    return "\n".join(head + _train_section(cfg["train"]) + quality)
