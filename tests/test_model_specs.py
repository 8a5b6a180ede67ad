"""Model specs: any nn.Module by import path, folders recognised from their files, and clear errors.

Every model here is tiny and random; the checks are that the spec reaches the right loader, that the adapter keeps
the library's contract (logits, features, CAM layer, normalisation, resolution) and that every failure is a
:class:`~diffguard.errors.UserError` naming the file or key and what to do.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffguard.backends.latent import LatentBackend
from diffguard.backends.loaders import CheckpointError
from diffguard.backends.pixel_unet import PixelBackend
from diffguard.classify.gradcam import grad_cam
from diffguard.errors import ConfigError, UserError
from diffguard.model_files import shipped_path
from diffguard.specs.model_specs import build_backend, build_classifier

NETS = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width: int = 4, classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))
'''


@pytest.fixture()
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A helper module ``specnets`` importable from the tests, and a TinyNet with seeded weights."""
    (tmp_path / "specnets.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import specnets

    importlib.reload(specnets)
    torch.manual_seed(0)
    net = specnets.TinyNet().eval()
    save_file(net.state_dict(), str(tmp_path / "tiny.safetensors"))
    return tmp_path, net


def _images(n: int, side: int) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_module_spec_with_safetensors_cam_layer_and_normalisation(nets) -> None:
    root, net = nets
    clf = build_classifier({"type": "module", "class": "specnets:TinyNet", "kwargs": {"width": 4, "classes": 3},
                            "weights": str(root / "tiny.safetensors"), "cam_layer": "block",
                            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resolution": 16})
    assert clf.num_classes == 3 and clf.resolution == (16, 16) and clf.cam_layer is clf.model.block
    x = _images(2, 16)
    with torch.no_grad():
        expected = net(((x + 1) / 2 - 0.5) / 0.25)  # mean / std act on (x + 1) / 2 in [0, 1]
        logits, feats = clf.logits_and_features(x)
    torch.testing.assert_close(clf.logits(x).detach(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=1e-6)
    assert feats.shape == (2, 4)  # the input of the last Linear
    assert clf.logits(_images(1, 40)).shape == (1, 3)  # other sizes are resized to 16
    assert grad_cam(clf, x, torch.tensor([0, 2])).shape == (2, 16, 16)


def test_module_spec_torch_checkpoint_file_path_and_features_layer(nets) -> None:
    root, net = nets
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, root / "tiny.pt")  # a nested state dict
    clf = build_classifier({"type": "module", "class": f"{root / 'specnets.py'}:TinyNet",
                            "weights": str(root / "tiny.pt"), "cam_layer": "block.1", "features_layer": "pool"})
    x = _images(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(clf.logits(x), net(x), atol=1e-6, rtol=1e-6)  # no mean / std: [-1, 1] as is
        logits, feats = clf.logits_and_features(x)
    assert clf.resolution is None and feats.shape == (2, 4) and logits.shape == (2, 3)


def test_module_spec_errors(nets) -> None:
    root, _ = nets
    base = {"type": "module", "class": "specnets:TinyNet", "weights": str(root / "tiny.safetensors"),
            "cam_layer": "block"}
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.nets'.*PYTHONPATH"):
        build_classifier({**base, "class": "no_such_pkg.nets:Net"})
    with pytest.raises(ConfigError, match="no attribute 'TinyNte'.*TinyNet"):
        build_classifier({**base, "class": "specnets:TinyNte"})
    with pytest.raises(ConfigError, match="cam_layer 'blok'.*close names.*'block'"):
        build_classifier({**base, "cam_layer": "blok"})
    with pytest.raises(CheckpointError, match="missing.safetensors not found"):
        build_classifier({**base, "weights": str(root / "missing.safetensors")})
    with pytest.raises(CheckpointError, match="wrong shapes.*stem.weight"):
        build_classifier({**base, "kwargs": {"width": 8}})
    with pytest.raises(ConfigError, match="needs weights"):
        build_classifier({k: v for k, v in base.items() if k != "weights"})
    with pytest.raises(ConfigError, match="unknown key 'camlayer'.*cam_layer"):
        build_classifier({**base, "camlayer": "block"})
    with pytest.raises(ConfigError, match="could not be built"):
        build_classifier({**base, "kwargs": {"depth": 3}})


def _tiny_unet(classes: int | None = None, channels: int = 1):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 8),
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       norm_num_groups=4, num_class_embeds=classes)


@pytest.fixture()
def pipeline(tmp_path: Path) -> Path:
    """A diffusers DDPM pipeline folder as ``DDPMPipeline.save_pretrained`` writes it: model_index.json, unet/,
    scheduler/ (written part by part: importing the pipeline classes costs seconds)."""
    from diffusers import DDPMScheduler

    root = tmp_path / "ddpm"
    _tiny_unet().save_pretrained(root / "unet")
    DDPMScheduler(num_train_timesteps=100).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
                                                       "scheduler": ["diffusers", "DDPMScheduler"],
                                                       "unet": ["diffusers", "UNet2DModel"]}))
    return root


def _eps_ok(backend, y=None) -> None:
    z = torch.randn(2, backend.unet.config.in_channels, 8, 8)
    with torch.no_grad():
        assert backend.eps(z, torch.tensor([1, 50]), y).shape == z.shape


def test_diffusers_folders_are_recognised(pipeline: Path, tmp_path: Path) -> None:
    assert (pipeline / "model_index.json").is_file()
    for spec in (str(pipeline), {"type": "diffusers", "folder": str(pipeline)}):
        backend = build_backend(spec)
        assert isinstance(backend, PixelBackend) and backend.null_label is None
        assert backend.alphas_cumprod.shape == (100,)
        _eps_ok(backend)
    bare = build_backend(str(pipeline / "unet"))  # config.json with _class_name; scheduler/ beside it
    assert isinstance(bare, PixelBackend) and bare.alphas_cumprod.shape == (100,)
    shutil.copytree(pipeline / "unet", tmp_path / "alone")
    with pytest.raises(CheckpointError, match="scheduler_config.json.*give scheduler"):
        build_backend(str(tmp_path / "alone"))
    given = build_backend({"type": "diffusers", "folder": str(tmp_path / "alone"),
                           "scheduler": str(pipeline / "scheduler" / "scheduler_config.json")})
    torch.testing.assert_close(given.alphas_cumprod, bare.alphas_cumprod)


def test_class_conditional_unet_needs_its_null_label(tmp_path: Path) -> None:
    from diffusers import DDPMScheduler

    _tiny_unet(classes=5).save_pretrained(tmp_path / "cond" / "unet")
    DDPMScheduler(num_train_timesteps=100).save_pretrained(tmp_path / "cond" / "scheduler")
    with pytest.raises(ConfigError, match="null_label.*4"):
        build_backend(str(tmp_path / "cond"))
    backend = build_backend({"type": "diffusers", "folder": str(tmp_path / "cond"), "null_label": 4})
    assert backend.null_label == 4
    _eps_ok(backend, torch.tensor([0, 3]))


def test_latent_pipeline_is_recognised_and_moves(tmp_path: Path) -> None:
    from diffusers import DDPMScheduler, VQModel

    from diffguard.devices import to_device

    root = tmp_path / "ldm"
    _tiny_unet(channels=3).save_pretrained(root / "unet")
    VQModel(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
            latent_channels=3, num_vq_embeddings=8, norm_num_groups=4, layers_per_block=1,
            ).save_pretrained(root / "vqvae")
    DDPMScheduler(num_train_timesteps=100).save_pretrained(root / "scheduler")
    backend = build_backend(str(root))
    assert isinstance(backend, LatentBackend) and backend.scale_factor == 1.0
    with torch.no_grad():
        assert backend.encode(_images(1, 8)).shape == (1, 3, 8, 8)
    backend.to("meta")
    assert backend.eps_model.unet.conv_in.weight.device.type == "meta"
    assert backend.autoencoder.model.encoder.conv_in.weight.device.type == "meta"
    pixel = to_device(build_backend(None), torch.device("meta"))
    assert pixel.unet.conv_in.weight.device.type == "meta"


def test_shipped_layout_is_recognised() -> None:
    backend = build_backend(str(shipped_path("diffusion")))
    assert isinstance(backend, PixelBackend) and backend.null_label == 6
    assert build_backend({"type": "shipped"}).null_label == 6
    clf = build_classifier(str(shipped_path("classifier")))
    assert clf.num_classes == 6 and build_classifier({"type": "shipped"}).num_classes == 6
    with pytest.raises(ConfigError, match="diffusion model folder"):
        build_classifier(str(shipped_path("diffusion")))


def test_a_shipped_model_is_named_by_its_folder_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``{type: shipped, folder: NAME}`` finds a model folder of the package from any working directory, and the
    manifest hashes that folder (a config in the package cannot know where it is run from)."""
    from diffguard.specs.model_specs import spec_files

    monkeypatch.chdir(tmp_path)
    spec = {"type": "shipped", "folder": "fmnist6-diffusion-large"}
    backend = build_backend(spec)
    assert isinstance(backend, PixelBackend) and backend.null_label == 6
    assert backend.unet.config.block_out_channels[0] == 48  # the larger model, not the default
    assert spec_files(spec, shipped_path("diffusion")) == [shipped_path("diffusion").parent / "fmnist6-diffusion-large"]
    assert build_classifier({"type": "shipped", "folder": "fmnist6-classifier-s1"}).num_classes == 6
    assert spec_files({"type": "diffusers", "folder": "fmnist6-diffusion-large"}, shipped_path("diffusion")) == []
    with pytest.raises(UserError, match="no-such-model"):
        build_backend({"type": "shipped", "folder": "no-such-model"})


def test_unrecognised_folders_list_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    with pytest.raises(CheckpointError, match="Looked for: diffguard.json.*model_index.json.*UNet2DModel.*"
                                              "Found: \\['config.json', 'notes.txt'\\]"):
        build_backend(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(ConfigError, match="not a classifier folder.*'arch'.*Found: \\['notes.txt'\\]"):
        build_classifier(str(tmp_path))
    with pytest.raises(CheckpointError, match="not found"):
        build_backend(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("kind, spec", [
    ("classifier", {"type": "torchvision", "arch": "resnet18", "weights": "{m}/r18.pth"}),
    ("classifier", {"type": "openood_resnet18", "weights": "{m}/best.ckpt"}),
    ("classifier", {"type": "fmnist6", "folder": "{m}/clf"}),
    ("classifier", "{m}/clf"),
    ("diffusion", {"type": "adm", "checkpoint": "{m}/256x256_diffusion_uncond.pt"}),
    ("diffusion", {"type": "ddim_cifar", "checkpoint": "{m}/ddim.ckpt"}),
    ("diffusion", {"type": "compvis_ldm", "checkpoint": "{m}/model.ckpt"}),
    ("diffusion", {"type": "dit", "folder": "{m}/DiT-XL-2-256"}),
    ("diffusion", {"type": "latent_diffusers", "folder": "{m}/ldm"}),
    ("diffusion", {"type": "diffusers", "folder": "{m}/ddpm"}),
    ("diffusion", {"type": "fmnist6", "folder": "{m}/dm"}),
])
def test_a_missing_file_is_a_user_error_naming_it(tmp_path: Path, kind: str, spec) -> None:
    missing = str(tmp_path / "missing")
    spec = spec.format(m=missing) if isinstance(spec, str) else \
        {k: v.format(m=missing) if isinstance(v, str) else v for k, v in spec.items()}
    build = build_classifier if kind == "classifier" else build_backend
    with pytest.raises(UserError, match=str(tmp_path)):
        build(spec)


def test_spec_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs key\\(s\\) \\['checkpoint'\\]"):
        build_backend({"type": "adm"})
    with pytest.raises(ConfigError, match="unknown key 'foldr'.*folder"):
        build_backend({"type": "dit", "foldr": "x"})


def _documented_block(marker: str) -> str:
    """The YAML code block between ``<!-- marker -->`` and ``<!-- /marker -->`` in docs/paper-configs.md."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "paper-configs.md").read_text()
    block = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0].strip()
    assert block.startswith("```yaml\n") and block.endswith("\n```"), block[:40]
    return block[len("```yaml\n"):-len("```")]


def test_the_documented_torchvision_spec_is_accepted_as_written() -> None:
    import yaml

    spec = yaml.safe_load(_documented_block("torchvision-spec-example"))["classifier"]
    assert {"num_classes", "mean", "std", "weights", "resolution", "cam_layer"} <= set(spec)
    with pytest.raises(UserError, match=re.escape(spec["weights"])):  # every key accepted; only the file is missing
        build_classifier(spec)
    clf = build_classifier({**spec, "weights": None})  # the same block with random weights
    assert clf.num_classes == spec["num_classes"] == 1000 and clf.resolution == (224, 224)
    assert clf.mean.flatten().tolist() == pytest.approx(spec["mean"]) and \
        clf.std.flatten().tolist() == pytest.approx(spec["std"])
    assert clf.cam_layer is clf.model.layer4 and clf.head is clf.model.fc
    with torch.no_grad():
        assert clf.logits(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)  # resized to 224
