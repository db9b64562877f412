"""Model artifacts: exact round trips, and every kind of damage refused with a useful message."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import safetensors
import torch
from safetensors.torch import save

from rlr import artifact as art
from rlr.config import BackboneConfig, preset
from rlr.errors import ArtifactError
from rlr.model import RLRModel, create_model

CLASSES = ["bottle", "cable"]


def _tiny_config():
    cfg = preset("tiny")
    return cfg.replace(backbone=BackboneConfig(cfg.backbone.name, cfg.backbone.out_indices, 64,
                                               weights="none"))


@pytest.fixture(scope="module")
def model() -> RLRModel:
    torch.manual_seed(0)
    m = create_model(_tiny_config())
    # Non-trivial feature statistics: they are state that must travel with the weights.
    chans = m.backbone.channels
    m.reconstructor.set_feature_stats([torch.randn(c) for c in chans],
                                      [torch.rand(c) + 0.5 for c in chans])
    return m.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "model.safetensors"
    manifest = art.save_artifact(
        path, model, CLASSES, thresholds={"bottle": np.float64(0.25)},
        training={"n_train": 40, "best_val_loss": np.float32(0.5), "result": {"epochs": 3}},
        metrics={"image_auroc": 0.91, "undefined": float("nan")},
    )
    return path, manifest


def _split(path):
    """(tensors, manifest) of an artifact file, read with safetensors only."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        manifest = json.loads(f.metadata()[art.MANIFEST_KEY])
    return tensors, manifest


def _write(path, tensors, manifest, rehash: bool):
    if rehash:
        manifest = {**manifest, "sha256": art.artifact_sha256(tensors, manifest)}
    path.write_bytes(save(tensors, metadata={art.MANIFEST_KEY: json.dumps(manifest)}))
    return path


def _predict(m, x):
    with torch.no_grad():
        return m(x)


def test_round_trip_gives_identical_predictions_and_manifest(model, images, saved):
    path, manifest = saved
    loaded = art.load_artifact(path)
    assert not loaded.model.training
    a, b = _predict(model, images), _predict(loaded.model, images)
    assert torch.equal(a.score, b.score)
    assert torch.equal(a.anomaly_map, b.anomaly_map)
    assert loaded.manifest == manifest == art.read_manifest(path)
    assert loaded.model.config == model.config
    assert manifest["schema_version"] == art.SCHEMA_VERSION
    assert manifest["format"] == "rlr-model"
    assert manifest["class_names"] == CLASSES
    assert manifest["thresholds"] == {"bottle": 0.25, "cable": None, "default": None}
    assert manifest["backbone"]["channels"] == list(model.backbone.channels)
    assert manifest["backbone"]["weight_source"] == "none"
    assert manifest["training"]["best_val_loss"] == 0.5  # numpy scalar stored as a number
    assert manifest["metrics"]["undefined"] is None  # JSON has no NaN
    assert loaded.model.backbone.weight_source == "none"  # provenance survives the reload
    # Everything, backbone included, comes from the file: nothing is left at random init.
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key


def test_bytes_round_trip(model, images):
    data = art.artifact_to_bytes(model, CLASSES, metrics={"f1": 0.8})
    assert art.read_manifest_bytes(data)["metrics"] == {"f1": 0.8}
    loaded = art.load_artifact_bytes(data)
    assert torch.equal(_predict(model, images).score, _predict(loaded.model, images).score)


def test_loading_never_unpickles(saved, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("artifact loading must not unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert art.load_artifact(saved[0]).manifest["class_names"] == CLASSES


def test_flipped_weight_byte_is_refused(saved, tmp_path):
    data = bytearray(saved[0].read_bytes())
    data[-3] ^= 0x01  # the last bytes belong to the tensor data region
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"sha256 mismatch.*modified or corrupted.*re-"):
        art.load_artifact(bad)


def test_edited_manifest_is_refused(saved, tmp_path):
    tensors, manifest = _split(saved[0])
    manifest["thresholds"]["cable"] = 99.0  # e.g. someone silencing alarms by hand
    bad = _write(tmp_path / "edited.safetensors", tensors, manifest, rehash=False)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        art.load_artifact(bad)
    # The header reader is documented not to check the hash.
    assert art.read_manifest(bad)["thresholds"]["cable"] == 99.0


@pytest.mark.parametrize("kind", ["truncated", "random", "empty"])
def test_unreadable_files_are_refused(saved, tmp_path, kind):
    data = saved[0].read_bytes()
    content = {"truncated": data[: int(len(data) * 0.6)],
               "random": np.random.default_rng(0).bytes(4096), "empty": b""}[kind]
    bad = tmp_path / f"{kind}.safetensors"
    bad.write_bytes(content)
    for load in (art.load_artifact, art.read_manifest):
        with pytest.raises(ArtifactError, match=r"not a readable safetensors.*truncated"):
            load(bad)


def test_missing_file_and_foreign_safetensors_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        art.load_artifact(tmp_path / "nope.safetensors")
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(save({"w": torch.ones(3)}, metadata={"format": "pt"}))
    for load in (art.load_artifact, art.read_manifest):
        with pytest.raises(ArtifactError, match="not an rlr model artifact"):
            load(plain)


def test_newer_schema_asks_for_an_upgrade(saved, tmp_path):
    tensors, manifest = _split(saved[0])
    manifest["schema_version"] = 99
    bad = _write(tmp_path / "future.safetensors", tensors, manifest, rehash=True)
    for load in (art.load_artifact, art.read_manifest):
        with pytest.raises(ArtifactError, match=r"schema 99, newer.*upgrade rlr"):
            load(bad)


def test_config_that_does_not_match_the_weights_is_refused(saved, tmp_path):
    tensors, manifest = _split(saved[0])
    manifest["config"]["levels"][0]["d_model"] = 64  # hash recomputed: only the check can tell
    bad = _write(tmp_path / "mismatch.safetensors", tensors, manifest, rehash=True)
    with pytest.raises(ArtifactError, match=r"config does not match the weights.*levels\.0"):
        art.load_artifact(bad)


def test_update_manifest_changes_thresholds_and_still_loads(model, images, tmp_path):
    path = tmp_path / "m.safetensors"
    before = art.save_artifact(path, model, CLASSES, metrics={"image_auroc": 0.9})
    after = art.update_manifest(path, thresholds={"cable": 0.7, "default": 0.6},
                                metrics={"threshold_f1": 0.8})
    assert after["thresholds"] == {"bottle": None, "cable": 0.7, "default": 0.6}
    assert after["metrics"] == {"image_auroc": 0.9, "threshold_f1": 0.8}
    assert after["sha256"] != before["sha256"]
    loaded = art.load_artifact(path)
    assert loaded.manifest == after
    assert torch.equal(_predict(model, images).score, _predict(loaded.model, images).score)
    with pytest.raises(ArtifactError, match="unknown class 'glass'"):
        art.update_manifest(path, thresholds={"glass": 1.0})
    with pytest.raises(ArtifactError, match="only thresholds, metrics, training"):
        art.update_manifest(path, config={})


def test_update_manifest_does_not_re_sign_a_tampered_file(saved, tmp_path):
    tensors, manifest = _split(saved[0])
    tensors["reconstructor.levels.0.reference"][0, 0] += 1.0
    bad = _write(tmp_path / "tampered.safetensors", tensors, manifest, rehash=False)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        art.update_manifest(bad, thresholds={"default": 1.0})


def test_invalid_manifest_values_are_refused(model, tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ArtifactError, match="not finite"):
        art.save_artifact(path, model, CLASSES, thresholds={"bottle": float("inf")})
    with pytest.raises(ArtifactError, match="more than once"):
        art.save_artifact(path, model, ["a", "a"])
    with pytest.raises(ArtifactError, match="cannot store"):
        art.save_artifact(path, model, CLASSES, training={"obj": object()})
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary files left behind
