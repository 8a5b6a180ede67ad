"""The shipped weights load and run; model folders fail clearly when broken; the quality check and cards work."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.train.model_cards import write_cards
from diffguard.model_files import ModelFileError, load_classifier, load_diffusion, shipped_path
from diffguard.diffusion.early_stop import psnr
from diffguard.train.model_check import QualityCheck, run_quality_check


def test_shipped_classifier_loads_and_gives_finite_logits():
    model = load_classifier()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (3, 6) and torch.isfinite(logits).all()
    assert feats.shape == (3, 128) and torch.isfinite(feats).all()


def test_shipped_diffusion_loads_and_gives_finite_eps():
    m = load_diffusion()
    assert m.num_classes == 6 and m.null_label == 6 and m.resolution == 28 and m.channels == 1
    assert m.alphas_cumprod.shape == (1000,) and bool((m.alphas_cumprod[1:] < m.alphas_cumprod[:-1]).all())
    backend = PixelBackend(m.unet, m.alphas_cumprod, m.null_label, m.channels)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        e_null = backend.eps(x, torch.tensor([10, 900]), None)
        e_cond = backend.eps(x, torch.tensor([10, 900]), torch.tensor([0, 5]))
    assert e_null.shape == e_cond.shape == (2, 1, 28, 28)
    assert torch.isfinite(e_null).all() and not torch.equal(e_null, e_cond)


def test_shipped_model_cards_exist():
    folders = [shipped_path("classifier"), shipped_path("diffusion"),
               shipped_path("diffusion").parent / "fmnist6-diffusion-large"]
    for folder in folders:
        card = (folder / "MODEL_CARD.md").read_text()
        assert "command: `diffguard train" in card and "Measured quality" in card


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_classifier(tmp_path)
    with pytest.raises(ModelFileError, match="not found"):
        load_diffusion(tmp_path)


def test_wrong_shapes_are_reported(tmp_path, tiny_models):
    clf = tmp_path / "clf"
    shutil.copytree(tiny_models[0], clf)
    cfg = json.loads((clf / "config.json").read_text())
    cfg["width"] = 8
    (clf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="wrong shapes"):
        load_classifier(clf)


def test_corrupt_weights_are_reported(tmp_path, tiny_models):
    diff = tmp_path / "diff"
    shutil.copytree(tiny_models[1], diff)
    (diff / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="safetensors"):
        load_diffusion(diff)


def test_psnr_on_unit_scale():
    a = torch.zeros(2, 1, 4, 4)
    b = a.clone()
    b[1] += 0.2  # 0.1 on the [0, 1] scale -> 20 dB
    out = psnr(a, b)
    assert out[0] > 100 and abs(float(out[1]) - 20.0) < 1e-4


def test_quality_check_and_cards_on_tiny_models(tmp_path, tiny_models, fake_fmnist_root, capsys):
    clf, diff = (tmp_path / "clf", tmp_path / "diff")
    shutil.copytree(tiny_models[0], clf)
    shutil.copytree(tiny_models[1], diff)
    check = QualityCheck(n_recon=4, n_per_class=2, steps=4, batch_size=12)
    record = run_quality_check(check, tmp_path / "out", clf, diff, str(fake_fmnist_root), "cpu")
    assert set(record["figures"]) == {"classifier_accuracy", "recon_psnr_db", "cfg_sample_agreement"}
    assert all(isinstance(v, float) for v in record["figures"].values())
    assert (tmp_path / "out" / "samples.png").is_file() and (tmp_path / "out" / "quality.json").is_file()
    assert "| figure | measured | target | pass |" in capsys.readouterr().out
    for card in write_cards(record, clf, diff):
        text = card.read_text()
        assert "seed 0, 2 steps" in text and f"{record['figures']['recon_psnr_db']:.2f} dB" in text


def test_cli_models_check_writes_table_and_cards(tmp_path, tiny_models, fake_fmnist_root, capsys):
    from diffguard.cli import main

    clf, diff = tmp_path / "clf", tmp_path / "diff"
    shutil.copytree(tiny_models[0], clf)
    shutil.copytree(tiny_models[1], diff)
    rc = main(["models", "check", "--classifier", str(clf), "--diffusion", str(diff), "--n-recon", "2",
               "--n-per-class", "1", "--steps", "3", "--batch-size", "6", "--data-root", str(fake_fmnist_root),
               "--out", str(tmp_path / "out"), "--device", "cpu", "--write-cards"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| figure | measured | target | pass |" in out and "MODEL_CARD.md" in out
    assert (clf / "MODEL_CARD.md").is_file() and (diff / "MODEL_CARD.md").is_file()


def test_models_check_spec_arguments_read_like_a_run_config(tmp_path):
    from diffguard.errors import ConfigError
    from diffguard.train.model_check import parse_model_spec, train_folder

    inline = "{type: torchvision, arch: resnet18, weights: w.pth, num_classes: 3}"
    assert parse_model_spec(inline, "classifier") == {"type": "torchvision", "arch": "resnet18", "weights": "w.pth",
                                                      "num_classes": 3}
    assert parse_model_spec('{"type": "diffusers", "folder": "/m"}', "diffusion") == {"type": "diffusers",
                                                                                      "folder": "/m"}
    assert parse_model_spec("fmnist6-diffusion-large", "diffusion") == {"type": "shipped",
                                                                        "folder": "fmnist6-diffusion-large"}
    assert parse_model_spec(str(tmp_path), "classifier") == str(tmp_path) and parse_model_spec(None, "x") is None
    with pytest.raises(ConfigError, match="not a valid YAML"):
        parse_model_spec("{type: [", "classifier")
    assert train_folder(None, "diffusion") == shipped_path("diffusion")
    assert train_folder({"type": "shipped", "folder": "fmnist6-diffusion-large"}, "diffusion") == \
        shipped_path("diffusion").parent / "fmnist6-diffusion-large"
    assert train_folder(parse_model_spec(inline, "classifier"), "classifier") is None


def test_cli_models_check_takes_model_specs_built_as_the_runner_builds_them(tmp_path, tiny_models, fake_fmnist_root,
                                                                            capsys):
    """The tiny classifier as an inline ``type: module`` spec and the tiny diffusion folder as an inline JSON
    ``type: diffusers`` spec measure the same figures as the two folders."""
    from diffguard.cli import main

    clf, diff = tiny_models
    common = ["--n-recon", "2", "--n-per-class", "1", "--steps", "3", "--batch-size", "6", "--data-root",
              str(fake_fmnist_root), "--device", "cpu"]
    assert main(["models", "check", "--classifier", str(clf), "--diffusion", str(diff), "--out",
                 str(tmp_path / "folders"), *common]) == 0
    module = ("{type: module, class: 'diffguard.nets.resnet:SmallResNet', kwargs: {num_classes: 6, width: 4}, "
              f"weights: '{clf / 'model.safetensors'}'}}")
    diffusers = json.dumps({"type": "diffusers", "folder": str(diff)})
    assert main(["models", "check", "--classifier", module, "--diffusion", diffusers, "--out",
                 str(tmp_path / "specs"), *common]) == 0
    folders, specs = (json.loads((tmp_path / d / "quality.json").read_text()) for d in ("folders", "specs"))
    assert specs["classifier"]["type"] == "module" and specs["diffusion"] == {"type": "diffusers", "folder": str(diff)}
    assert specs["figures"] == pytest.approx(folders["figures"], rel=1e-6)
    capsys.readouterr()
    # a spec's model is checked against the benchmark as the runner checks it; cards need `diffguard train` folders
    torchvision = "{type: torchvision, arch: resnet18, weights: null, num_classes: 3}"
    assert main(["models", "check", "--classifier", torchvision, "--out", str(tmp_path / "tv"), *common]) == 2
    assert "has 3 classes; benchmark 'fmnist6' has 6" in capsys.readouterr().err
    assert main(["models", "check", "--classifier", module, "--write-cards", "--out", str(tmp_path / "c"),
                 *common]) == 2
    assert "--write-cards" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_quality_check_of_an_unconditional_diffusion_spec(tmp_path, tiny_models, fake_fmnist_root, capsys):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1,
                down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=4,
                ).save_pretrained(tmp_path / "uncond" / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "uncond" / "scheduler")
    check = QualityCheck(n_recon=2, n_per_class=1, steps=3, batch_size=6)
    record = run_quality_check(check, tmp_path / "out", str(tiny_models[0]),
                               {"type": "diffusers", "folder": str(tmp_path / "uncond")}, str(fake_fmnist_root), "cpu")
    assert record["figures"]["cfg_sample_agreement"] is None and record["figures"]["recon_psnr_db"] > 0
    assert "| n/a (unconditional model) |" in capsys.readouterr().out
    assert (tmp_path / "out" / "samples.png").is_file()
