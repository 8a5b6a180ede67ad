"""The paper-setting builders and their dict descriptions stay consistent with the code they name."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch

from diffguard.paper import PAPER_CONFIGS, build_cifar10_detector
from diffguard.presets import PRESETS


def test_descriptions_name_real_builders_presets_and_options() -> None:
    assert sorted(PAPER_CONFIGS) == ["cifar10", "gdm", "ldm"]
    for name, cfg in PAPER_CONFIGS.items():
        module, _, func = cfg["builder"].rpartition(".")
        builder = getattr(importlib.import_module(module), func)
        assert set(cfg["files"]) <= set(inspect.signature(builder).parameters), name
        preset_args = set(inspect.signature(PRESETS.get(cfg["preset"])).parameters)
        assert set(cfg["options"]) - {"distances"} <= preset_args, name


def test_cifar10_builder_end_to_end(tmp_path: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from diffguard.nets.cifar_resnet import CifarResNet18

    torch.manual_seed(0)
    UNet2DModel(sample_size=32, block_out_channels=(32, 32), layers_per_block=1, num_class_embeds=11,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                ).save_pretrained(tmp_path / "ddpm" / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "ddpm" / "scheduler")
    torch.save(CifarResNet18(10).state_dict(), tmp_path / "best.ckpt")
    det = build_cifar10_detector(tmp_path / "ddpm", tmp_path / "best.ckpt", steps=4)
    assert det.distances == ("logits_l1",) and det.guidance.cam_cut == 0.3
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    score = det.predict(x)
    assert score.shape == (2,) and bool(torch.isfinite(score).all())
