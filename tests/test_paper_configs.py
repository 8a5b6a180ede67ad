"""The paper settings live in their run configs only: each config describes itself (``about:``), names files the
loaders take, states its DiffGuard parameters as the preset defines them, and builds a working detector."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from diffguard.detectors.diffguard import DiffGuard
from diffguard.errors import ConfigError
from diffguard.run.run_config import build_run_config, read_config_file
from diffguard.paper import build_paper_detector, paper_settings, setting_files
from diffguard.detectors.diffguard_presets import PRESETS

SETTINGS = ["cifar10", "imagenet-gdm", "imagenet-ldm"]


def test_the_paper_settings_are_the_configs() -> None:
    assert sorted(paper_settings()) == SETTINGS


@pytest.mark.parametrize("name", SETTINGS)
def test_each_config_describes_itself_and_parses(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    about = paper_settings()[name]
    assert {"paper", "files", "input", "cost"} <= set(about)
    files = setting_files(name)
    assert set(files) == set(about["files"]) and all(files.values())  # every ${VAR} is described, and no more
    for var in files:
        monkeypatch.setenv(var, f"/ckpt/{var.lower()}")
    run = build_run_config(read_config_file(name))
    assert run.about == about
    if run.image_size is not None:
        assert about["input"].startswith(f"{run.image_size} px")
    (method,) = [m for m in run.methods if m.is_diffguard]
    params = dict(method.params)
    preset = PRESETS.get(params.pop("preset"))
    params.pop("overrides", None)
    defaults = inspect.signature(preset).parameters
    fields = set(inspect.signature(DiffGuard).parameters)
    assert set(params) <= set(defaults) | fields
    for key, value in params.items():  # the config states the paper's values; the preset's defaults agree
        if key in defaults and defaults[key].default is not inspect.Parameter.empty and key != "dists_weights":
            assert value == defaults[key].default, (name, key)


def test_a_missing_file_names_the_argument_and_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in setting_files("imagenet-gdm"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="adm_checkpoint=<guided-diffusion 256x256_diffusion_uncond.pt"):
        build_paper_detector("imagenet-gdm", resnet50_weights="r50.pth", dists_weights="d.safetensors")
    with pytest.raises(ConfigError, match="unknown benchmark config"):
        build_paper_detector("imagenet-gmd")


def test_cifar10_paper_detector_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from diffguard.nets.cifar_resnet import CifarResNet18

    monkeypatch.delenv("DIFFNB_CKPT", raising=False)  # replaced by the diffusion spec below: not needed
    torch.manual_seed(0)
    UNet2DModel(sample_size=32, block_out_channels=(32, 32), layers_per_block=1, num_class_embeds=11,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                ).save_pretrained(tmp_path / "ddpm" / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "ddpm" / "scheduler")
    torch.save(CifarResNet18(10).state_dict(), tmp_path / "best.ckpt")
    det = build_paper_detector("cifar10", openood_ckpt=tmp_path / "best.ckpt", steps=4,
                               diffusion={"type": "diffusers", "folder": str(tmp_path / "ddpm"), "null_label": 10})
    assert tuple(det.distances) == ("logits_l1",) and det.guidance.cam_cut == 0.3 and det.guidance.scale == 10.0
    assert det.backend.null_label == 10
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    score = det.predict(x)
    assert score.shape == (2,) and bool(torch.isfinite(score).all())
