"""Exported graphs compute what the model computes: every preset's graph on ONNX Runtime,
OpenVINO and TorchScript against torch (fp32: scores within 1e-4 relative, maps within 1e-4
absolute), on synthetic images and on real ELPV cells; exports are traceable and cached."""

from __future__ import annotations

import json

import pytest
import torch

from rlr.artifact import load_artifact
from rlr.data import list_images, load_image, to_tensor
from rlr.engines import available, create_engine, export_model, read_export
from rlr.engines.graph import ONNX, cached_export
from rlr.errors import ConfigError
from tests.unit.rlr.engines.helpers import CPU, EXPORTED, close, random_model


def test_engines_under_test_are_installed():
    # The dev extra installs both; CI must not skip the engines silently.
    assert EXPORTED == ["onnxruntime", "openvino"], available(CPU)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "lite", "lite-coarse"])
def test_every_engine_matches_torch_for_each_preset(name, synthetic_root, tmp_path):
    model = random_model(name)
    manifest = {"sha256": f"{name}-" + "0" * 40}
    s = model.image_size
    x = to_tensor([load_image(p, s) for p in list_images([synthetic_root / "tile" / "test"])][:4])
    ref = model.predict(x)
    for engine in EXPORTED:
        rt = create_engine(engine, model, manifest, CPU, "fp32", tmp_path)
        close(rt.predict(x), ref)
        close(rt.predict(x[:1]), model.predict(x[:1]))  # any batch size
    graph = export_model(model, manifest, "torchscript", tmp_path / "ts")
    score, amap = torch.jit.load(str(graph))(x)
    assert torch.allclose(score, ref.score, atol=1e-6) and torch.allclose(amap, ref.anomaly_map,
                                                                           atol=1e-6)


@pytest.mark.slow
def test_the_paper_dimensions_export_and_match(tmp_path):
    """EfficientNet-B6 (random weights: the hub is out of reach) with the paper's levels."""
    model = random_model("paper")
    x = torch.rand(1, 3, 256, 256)
    rt = create_engine("onnxruntime", model, {"sha256": "paper-" + "0" * 40}, CPU, "fp32",
                       tmp_path)
    close(rt.predict(x), model.predict(x))


@pytest.mark.slow
def test_elpv_cells_score_the_same_on_every_engine(served_model, tmp_path):
    from rlr.datasets import load_dataset

    art = load_artifact(served_model)
    cells = [s.path for s in load_dataset("elpv", seed=0).test][:12]
    x = to_tensor([load_image(p, art.model.image_size) for p in cells])
    ref = art.model.predict(x)
    for engine in EXPORTED:
        close(create_engine(engine, art.model, art.manifest, CPU, "fp32", tmp_path).predict(x),
              ref)


def test_export_records_its_source_and_is_cached_by_sha256(served_model, tmp_path):
    art = load_artifact(served_model)
    graph = export_model(art.model, art.manifest, "onnx", tmp_path / "out", batch=4)
    info = read_export(tmp_path / "out")
    assert info["source_sha256"] == art.manifest["sha256"]
    assert info["manifest"]["class_names"] == art.manifest["class_names"]
    assert (info["format"], info["batch"], info["image_size"]) == ("onnx", 4, 64)
    assert graph.name == "model.onnx" and graph.stat().st_size > 10_000
    first = cached_export(art.model, art.manifest, ONNX, "fp32", tmp_path / "cache")
    mtime = first.stat().st_mtime_ns
    again = cached_export(art.model, art.manifest, ONNX, "fp32", tmp_path / "cache")
    assert again == first and again.stat().st_mtime_ns == mtime  # not exported twice
    assert art.manifest["sha256"][:24] in str(first)
    json.loads((first.parent / "export.json").read_text())


def test_clear_errors_for_what_cannot_be_exported(served_model, tmp_path):
    art = load_artifact(served_model)
    with pytest.raises(ConfigError, match="format 'pb' unknown; use one of onnx, openvino, "
                                          "torchscript"):
        export_model(art.model, art.manifest, "pb", tmp_path / "x")
    with pytest.raises(ConfigError, match="onnx exports are fp32"):
        export_model(art.model, art.manifest, "onnx", tmp_path / "x", precision="fp16")
    with pytest.raises(ConfigError, match="not an rlr export"):
        read_export(tmp_path)
    assert not (tmp_path / "x").exists()
