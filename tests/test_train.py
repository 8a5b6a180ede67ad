"""Training commands: a few steps on tiny configurations, and resuming equals an uninterrupted run."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from safetensors.torch import load_file

from diffguard.cli import main
from diffguard.model_files import load_classifier, load_diffusion
from diffguard.train.train_classifier import ClassifierTrainConfig, train_classifier
from diffguard.train.train_diffusion import DiffusionTrainConfig, train_diffusion

TINY_CLF = dict(steps=4, batch_size=16, width=4, limit=256, warmup=2)
TINY_DIFF = dict(steps=4, batch_size=8, channels=(8, 16, 16), attention_lowest=False, limit=128, warmup=2)


def _tensors(folder, name):
    return load_file(str(folder / name))


def test_classifier_resume_matches_uninterrupted(tmp_path, fake_fmnist_root):
    cfg = ClassifierTrainConfig(**TINY_CLF)
    assert train_classifier(cfg, tmp_path / "a", tmp_path / "ck_a", fake_fmnist_root, "cpu")
    for _ in range(3):  # max_minutes=0: each call makes one step, checkpoints and stops
        assert not train_classifier(cfg, tmp_path / "b", tmp_path / "ck_b", fake_fmnist_root, "cpu", max_minutes=0)
    assert train_classifier(cfg, tmp_path / "b", tmp_path / "ck_b", fake_fmnist_root, "cpu")
    a, b = _tensors(tmp_path / "a", "model.safetensors"), _tensors(tmp_path / "b", "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = load_classifier(tmp_path / "a")
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 6)


def test_diffusion_resume_matches_uninterrupted(tmp_path, fake_fmnist_root):
    cfg = DiffusionTrainConfig(**TINY_DIFF)
    assert train_diffusion(cfg, tmp_path / "a", tmp_path / "ck_a", fake_fmnist_root, "cpu")
    assert not train_diffusion(cfg, tmp_path / "b", tmp_path / "ck_b", fake_fmnist_root, "cpu", max_minutes=0)
    assert not train_diffusion(cfg, tmp_path / "b", tmp_path / "ck_b", fake_fmnist_root, "cpu", max_minutes=0)
    assert train_diffusion(cfg, tmp_path / "b", tmp_path / "ck_b", fake_fmnist_root, "cpu")
    name = "unet/diffusion_pytorch_model.safetensors"
    a, b = _tensors(tmp_path / "a", name), _tensors(tmp_path / "b", name)
    assert all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((tmp_path / "a" / "diffguard.json").read_text())
    assert info["null_label"] == 6 and info["train"]["steps"] == 4
    m = load_diffusion(tmp_path / "a")
    assert m.alphas_cumprod.shape == (1000,) and m.null_label == 6


def test_seed_changes_weights(tmp_path, fake_fmnist_root):
    train_classifier(ClassifierTrainConfig(**TINY_CLF, seed=0), tmp_path / "a", tmp_path / "ca", fake_fmnist_root)
    train_classifier(ClassifierTrainConfig(**TINY_CLF, seed=1), tmp_path / "b", tmp_path / "cb", fake_fmnist_root)
    a, b = _tensors(tmp_path / "a", "model.safetensors"), _tensors(tmp_path / "b", "model.safetensors")
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


def test_resume_refuses_other_config(tmp_path, fake_fmnist_root):
    cfg = ClassifierTrainConfig(**TINY_CLF)
    train_classifier(cfg, tmp_path / "a", tmp_path / "ck", fake_fmnist_root, "cpu", max_minutes=0)
    with pytest.raises(RuntimeError, match="another configuration"):
        train_classifier(ClassifierTrainConfig(**{**TINY_CLF, "lr": 0.5}), tmp_path / "a", tmp_path / "ck",
                         fake_fmnist_root, "cpu")


def test_cli_train_classifier(tmp_path, fake_fmnist_root, capsys):
    rc = main(["train", "classifier", "--out", str(tmp_path / "m"), "--ckpt-dir", str(tmp_path / "ck"),
               "--data-root", str(fake_fmnist_root), "--steps", "2", "--batch-size", "8", "--width", "4",
               "--limit", "64", "--warmup", "1", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "m" / "model.safetensors").is_file()
    assert "finished" in capsys.readouterr().out


def test_cli_reports_missing_data(tmp_path, capsys):
    rc = main(["train", "classifier", "--out", str(tmp_path / "m"), "--data-root", str(tmp_path / "empty")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "dataset-fashion-mnist" in err and "--data-root" in err


def test_cli_rejects_unknown_option():
    with pytest.raises(SystemExit) as exc:
        main(["train", "classifier", "--out", "x", "--learning-rate", "1"])
    assert exc.value.code == 2


def test_cli_time_limited_run_says_no_model_yet_and_the_command_that_finishes(tmp_path, fake_fmnist_root, capsys):
    from diffguard.cli import build_parser

    argv = ["train", "classifier", "--out", str(tmp_path / "m"), "--ckpt-dir", str(tmp_path / "ck"),
            "--data-root", str(fake_fmnist_root), "--steps", "2", "--batch-size", "8", "--width", "4",
            "--limit", "64", "--warmup", "1", "--device", "cpu", "--max-minutes", "0"]
    assert main(argv) == 0  # one step, a checkpoint, stop
    out = capsys.readouterr().out
    assert "training is NOT finished and no model was written to --out yet" in out
    assert f"{tmp_path / 'm'} holds no usable model" in out and f"checkpoint {tmp_path / 'ck'}" in out
    assert "rerun the same command" in out and not (tmp_path / "m" / "config.json").exists()
    command = shlex.split(out.strip().splitlines()[-1])
    assert command[0] == "diffguard"
    assert vars(build_parser().parse_args(command[1:])) == vars(build_parser().parse_args(argv))  # the same command
    assert main(command[1:]) == 0  # the second and last step: the model is written
    assert "finished: model written to" in capsys.readouterr().out
    assert load_classifier(tmp_path / "m")(torch.zeros(1, 1, 28, 28)).shape == (1, 6)
    # a new training into the same --out: the finished model there is an older one, not this run's
    assert main([*argv[:4], "--ckpt-dir", str(tmp_path / "ck2"), *argv[6:], "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'm'} still holds an older model, not this training's result" in out
    assert "--steps 3" in out.strip().splitlines()[-1]
