"""Training on a user benchmark (``--data BENCHMARK.yaml``): the CLI trains both models on a tiny 16x16 RGB
benchmark, the folder loaders take them, resuming goes through the fmnist6 code path, ``models check --data``
measures them, and a benchmark run on the user data is rebuilt from its results folder alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.adapter import fmnist6_classifier
from diffguard.cli import main
from diffguard.errors import ConfigError
from diffguard.train.train_classifier import ClassifierTrainConfig, train_classifier
from diffguard.train.train_diffusion import DiffusionTrainConfig, build_unet
from user_data import make_shapes

CPU = ["--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(benchmark YAML, classifier folder, diffusion folder), both trained for a few steps through the CLI."""
    root = tmp_path_factory.mktemp("user")
    bench = make_shapes(root / "bench")
    assert main(["train", "classifier", "--data", str(bench), "--out", str(root / "clf"), "--ckpt-dir",
                 str(root / "ck_clf"), "--steps", "3", "--batch-size", "8", "--width", "4", "--warmup", "1", *CPU]) == 0
    assert main(["train", "diffusion", "--data", str(bench), "--out", str(root / "diff"), "--ckpt-dir",
                 str(root / "ck_diff"), "--steps", "2", "--batch-size", "8", "--warmup", "1", "--attention-lowest",
                 "0", *CPU]) == 0
    return bench, root / "clf", root / "diff"


def test_models_record_the_data_and_load_with_the_folder_loaders(trained) -> None:
    _, clf, diff = trained
    cfg = json.loads((clf / "config.json").read_text())
    assert (cfg["num_classes"], cfg["in_channels"], cfg["resolution"]) == (3, 3, 16)
    assert cfg["class_names"] == ["circle", "square", "triangle"]
    assert cfg["train"]["data"]["benchmark"] == "shapes" and cfg["train"]["data"]["images"] == 24
    info = json.loads((diff / "diffguard.json").read_text())
    assert (info["num_classes"], info["null_label"], info["resolution"], info["channels"]) == (3, 3, 16, 3)
    classifier = fmnist6_classifier(str(clf))
    assert classifier.resolution == (16, 16)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert classifier.logits(x).shape == (2, 3)
        backend = PixelBackend.from_folder(str(diff))
        eps = backend.eps(x, torch.tensor([5, 500]), torch.tensor([0, backend.null_label]))
    assert backend.channels == 3 and backend.null_label == 3 and eps.shape == x.shape and torch.isfinite(eps).all()


def test_resume_on_user_data_matches_uninterrupted(tmp_path: Path) -> None:
    bench = make_shapes(tmp_path / "bench")
    cfg = ClassifierTrainConfig(steps=3, batch_size=8, width=4, warmup=1)
    assert train_classifier(cfg, tmp_path / "a", tmp_path / "ck_a", device="cpu", data=str(bench))
    for _ in range(2):  # max_minutes=0: one step, a checkpoint, stop
        assert not train_classifier(cfg, tmp_path / "b", tmp_path / "ck_b", device="cpu", max_minutes=0,
                                    data=str(bench))
    assert train_classifier(cfg, tmp_path / "b", tmp_path / "ck_b", device="cpu", data=str(bench))
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    Image.new("RGB", (16, 16)).save(tmp_path / "bench" / "data" / "train" / "circle" / "00.png")
    with pytest.raises(RuntimeError, match="another configuration"):  # changed data: the checkpoint is refused
        train_classifier(cfg, tmp_path / "b", tmp_path / "ck_b", device="cpu", data=str(bench))


@pytest.mark.parametrize("size", [16, 28, 32, 64])
def test_unet_sizes(size: int) -> None:
    unet = build_unet(DiffusionTrainConfig(channels=(8, 16, 16), attention_lowest=False), size, 3, 4)
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        assert unet(x, torch.tensor([10]), class_labels=torch.tensor([4])).sample.shape == x.shape


def test_sizes_training_cannot_take(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="not divisible by 4"):
        build_unet(DiffusionTrainConfig(), 30)
    bench = make_shapes(tmp_path / "bench", n_train=1, n_val=1, n_test=1)
    bench.write_text(bench.read_text().replace("size: 16", "size: 72"))
    rc = main(["train", "classifier", "--data", str(bench), "--out", str(tmp_path / "m"), *CPU])
    assert rc == 2 and "up to 64" in capsys.readouterr().err


def test_models_check_on_user_data(trained, tmp_path: Path, capsys) -> None:
    bench, clf, diff = trained
    rc = main(["models", "check", "--data", str(bench), "--classifier", str(clf), "--diffusion", str(diff),
               "--n-recon", "2", "--n-per-class", "1", "--steps", "3", "--batch-size", "6", "--out",
               str(tmp_path / "q"), "--write-cards", *CPU[:2]])
    assert rc == 0
    assert "classifier accuracy, shapes test (9 images)" in capsys.readouterr().out
    record = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert set(record["agreement_per_class"]) == {"circle", "square", "triangle"}
    assert Image.open(tmp_path / "q" / "samples.png").mode == "RGB"
    assert "# shapes classifier-under-protection" in (clf / "MODEL_CARD.md").read_text()
    assert "(B, 3, 16, 16)" in (diff / "MODEL_CARD.md").read_text()
    rc = main(["models", "check", "--data", str(bench), "--out", str(tmp_path / "q2"), *CPU[:2]])  # shipped models
    assert rc == 2 and "has 6 classes for 1x28x28 images" in capsys.readouterr().err


def test_benchmark_run_on_user_data_and_report_from_the_folder(trained, tmp_path: Path, capsys) -> None:
    bench, clf, diff = trained
    run = {"benchmark": str(bench), "classifier": str(clf), "diffusion": str(diff), "batch_size": 8,
           "methods": [{"name": "msp"}, {"name": "knn", "params": {"k": 2}},
                       {"name": "dg", "kind": "diffguard", "preset": "fmnist6-cfg",
                        "overrides": ["inversion.steps=4", "inversion.cap=3"]}]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    out = tmp_path / "out"
    assert main(["benchmark", str(tmp_path / "run.yaml"), "--out", str(out), "--no-progress", *CPU]) == 0
    stored = json.loads((out / "run_config.json").read_text())
    assert stored["benchmark"]["name"] == "shapes" and Path(stored["benchmark"]["sets"][0]["folder"]).is_absolute()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["set"] for r in metrics} >= {"lines", "noise", "near", "far"}
    assert {"dg", "knn"} <= {r["key"] for r in metrics}
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "results:" in capsys.readouterr().out
    from diffguard.cli.benchmark_cmd import _default_out
    from diffguard.run.run_config import load_run_config

    assert _default_out(str(bench), load_run_config(bench)) == Path("results") / "shapes"
    assert _default_out(str(tmp_path / "run.yaml"), load_run_config(tmp_path / "run.yaml")) == Path("results/run")
