"""``diffguard train diffusion``: the class-conditional pixel diffusion model with a null class, on fmnist6 or,
with ``--data BENCHMARK.yaml``, on the ``train`` set(s) of a user benchmark (any size up to 64x64, grey or RGB).

A diffusers ``UNet2DModel`` with a class embedding of ``num_classes + 1`` rows is trained to predict eps (DDPM
loss, uniform t). With probability ``p_uncond`` the label is replaced by the null class ``num_classes``, so the same
network gives the unconditional eps (classifier guidance, inversion) and the conditional one (classifier-free
guidance). The exported weights are the EMA ones. The UNet halves the image ``len(channels) - 1`` times, so the
image side must be divisible by ``2 ** (len(channels) - 1)`` (4 with the default channels: 16, 28, 32, 64 work).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from diffguard.data.fmnist6 import NUM_CLASSES, RESOLUTION
from diffguard.errors import ConfigError
from diffguard.model_files import save_diffusion
from diffguard.sysinfo import command_line, machine
from diffguard.train.common import (
    EMA,
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
class DiffusionTrainConfig:
    """Every option that changes the trained weights (the checkpoint refuses to resume under different ones)."""

    seed: int = 0
    steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_lowest: bool = True
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    precision: str = "bf16"  # autocast dtype for the forward pass: "bf16" or "fp32"
    limit: int | None = None  # use only the first N training images (tests)


def build_unet(cfg: DiffusionTrainConfig, size: int = RESOLUTION, channels: int = 1,
               num_classes: int = NUM_CLASSES) -> torch.nn.Module:
    """The UNet2DModel for ``channels`` x ``size`` x ``size`` images (default fmnist6's 1x28x28) with
    ``num_classes + 1`` class embeddings (last row = null class).

    Raises:
        ConfigError: a size the UNet cannot halve ``len(cfg.channels) - 1`` times.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    n = len(cfg.channels)
    factor = 2 ** (n - 1)
    if size % factor:
        raise ConfigError(f"image size {size} is not divisible by {factor}, which a UNet with {n} levels (channels "
                          f"{tuple(cfg.channels)}) needs: choose a size that is a multiple of {factor} (e.g. "
                          f"{max(factor, size // factor * factor)})")
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if cfg.attention_lowest:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=tuple(cfg.channels),
        layers_per_block=cfg.layers_per_block, down_block_types=tuple(down), up_block_types=tuple(up),
        num_class_embeds=num_classes + 1, norm_num_groups=8, attention_head_dim=min(32, cfg.channels[-1]),
    )


def build_scheduler(cfg: DiffusionTrainConfig):  # noqa: ANN201 - diffusers type
    """A DDPMScheduler that stores the linear beta schedule with the model."""

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, beta_schedule="linear", prediction_type="epsilon")


def diffusion_loss(unet: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, acp: torch.Tensor,
                   gen: torch.Generator, p_uncond: float, autocast_dtype: torch.dtype | None,
                   null_label: int = NUM_CLASSES) -> torch.Tensor:
    """DDPM eps-prediction loss. x0: (B, C, H, W) in [-1, 1]; y: (B,) labels; acp: (T,) alphas_cumprod;
    labels are replaced by ``null_label`` with probability ``p_uncond``."""
    b = x0.shape[0]
    t = torch.randint(0, acp.shape[0], (b,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    drop = torch.rand(b, generator=gen) < p_uncond
    y = torch.where(drop, torch.full_like(y, null_label), y)
    t, noise, y = t.to(x0.device), noise.to(x0.device), y.to(x0.device)
    a = acp.to(x0.device)[t].float().view(b, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.autocast(x0.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        pred = unet(xt, t, class_labels=y).sample
    return F.mse_loss(pred.float(), noise)


def train_diffusion(
    cfg: DiffusionTrainConfig, out: Path, ckpt_dir: Path, data_root: str | None = None, device: str = "auto",
    max_minutes: float | None = None, ckpt_every: int = 250, data: str | os.PathLike[str] | None = None,
) -> bool:
    """Train (or resume from ``ckpt_dir``) the diffusion model; export the EMA weights to ``out`` when done.

    ``data``: a benchmark (definition YAML or registered name) whose ``train`` set(s) to train on; None = fmnist6.
    Returns True when training finished, False when it stopped after ``max_minutes`` (rerun to resume).
    """
    if cfg.precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {cfg.precision!r}")
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    td = training_data(data, data_root, cfg.limit)
    x_all, y_all, k = td.images, td.labels, td.num_classes
    unet = build_unet(cfg, td.size, td.channels, k).to(dev)
    sched = build_scheduler(cfg)
    acp = sched.alphas_cumprod.double()
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema = EMA(unet, cfg.ema_decay)
    state, tensors = resume(ckpt_dir, cfg, unet, opt, td.record)
    if "ema" in tensors:
        ema.shadow = {k: v.to(dev) for k, v in tensors["ema"].items()}
    unet.train()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else None

    def step_fn(step: int) -> float:
        idx = batch_indices(x_all.shape[0], cfg.batch_size, cfg.seed, step)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * cosine_lr(step, cfg.steps, cfg.warmup)
        loss = diffusion_loss(unet, x_all[idx].to(dev), y_all[idx], acp, step_generator(cfg.seed, step),
                              cfg.p_uncond, dtype, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet, step)
        return float(loss.detach())

    def save(st: RunState) -> None:
        save_checkpoint(ckpt_dir, cfg, st, {"model": unet.state_dict(), "optimizer": opt.state_dict(),
                                            "ema": ema.shadow}, td.record)

    done = train_loop(step_fn, state, cfg.steps, save, ckpt_every, max_minutes, "diffusion")
    if done:
        unet.load_state_dict(ema.shadow)
        train = {"config": cfg.__dict__, "wall_s": state.wall_s, "steps": state.step, "device": str(dev),
                 "machine": machine(), "command": command_line()}
        info = {"num_classes": k, "null_label": k, "resolution": td.size, "channels": td.channels,
                "input_range": [-1.0, 1.0], "prediction": "epsilon", "train": train}
        if td.record is not None:
            info["class_names"] = list(td.class_names)
            train["data"] = {**td.record, "definition": str(data)}
        save_diffusion(unet.cpu().eval(), sched, out, info)
    return done
