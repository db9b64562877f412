"""Exported graphs compute what the model computes: every preset's graph on ONNX Runtime,
OpenVINO and TorchScript against torch (fp32: scores within 1e-4 relative, maps within 1e-4
absolute), on synthetic images and on real ELPV cells; exports are traceable and cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlr.artifact import load_artifact
from rlr.config import preset
from rlr.data import list_images, load_image, to_tensor
from rlr.errors import ConfigError
from rlr.export import export_model, read_export
from rlr.model import create_model
from rlr.runtimes import available, build_runtime, cached_export, measure

CPU = torch.device("cpu")
RUNTIMES = [r for r in ("onnxruntime", "openvino") if r in available(CPU)]


def _close(pred, ref) -> None:
    score, amap = pred.score.float(), pred.anomaly_map.float()
    rel = ((score - ref.score).abs() / ref.score.abs().clamp_min(1e-6)).max().item()
    assert rel < 1e-4, rel
    assert (amap - ref.anomaly_map).abs().max().item() < 1e-4


def _random_model(name: str, seed: int = 0):
    """A preset with random (not zero) reconstructor weights, so the whole graph is exercised."""
    torch.manual_seed(seed)
    model = create_model(preset(name), load_backbone_weights=name != "paper").eval()
    with torch.no_grad():
        for level in model.reconstructor.levels:
            level.reference.normal_(0, 1)
    return model


def test_runtimes_under_test_are_installed():
    # The dev extra installs both; CI must not skip the engines silently.
    assert RUNTIMES == ["onnxruntime", "openvino"], available(CPU)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "lite", "lite-coarse"])
def test_every_runtime_matches_torch_for_each_preset(name, synthetic_root, tmp_path):
    model = _random_model(name)
    manifest = {"sha256": f"{name}-" + "0" * 40}
    s = model.image_size
    x = to_tensor([load_image(p, s) for p in list_images([synthetic_root / "tile" / "test"])][:4])
    ref = model.predict(x)
    for runtime in RUNTIMES:
        rt = build_runtime(runtime, model, manifest, CPU, "fp32", tmp_path)
        _close(rt.predict(x), ref)
        _close(rt.predict(x[:1]), model.predict(x[:1]))  # any batch size
    graph = export_model(model, manifest, "torchscript", tmp_path / "ts")
    score, amap = torch.jit.load(str(graph))(x)
    assert torch.allclose(score, ref.score, atol=1e-6) and torch.allclose(amap, ref.anomaly_map,
                                                                           atol=1e-6)


@pytest.mark.slow
def test_the_paper_dimensions_export_and_match(tmp_path):
    """EfficientNet-B6 (random weights: the hub is out of reach) with the paper's levels."""
    model = _random_model("paper")
    x = torch.rand(1, 3, 256, 256)
    rt = build_runtime("onnxruntime", model, {"sha256": "paper-" + "0" * 40}, CPU, "fp32",
                       tmp_path)
    _close(rt.predict(x), model.predict(x))


@pytest.mark.slow
def test_elpv_cells_score_the_same_on_every_runtime(served_model, tmp_path):
    from rlr.datasets import load_dataset

    art = load_artifact(served_model)
    cells = [s.path for s in load_dataset("elpv", seed=0).test][:12]
    x = to_tensor([load_image(p, art.model.image_size) for p in cells])
    ref = art.model.predict(x)
    for runtime in RUNTIMES:
        _close(build_runtime(runtime, art.model, art.manifest, CPU, "fp32", tmp_path).predict(x),
               ref)


def test_export_records_its_source_and_is_cached_by_sha256(served_model, tmp_path):
    art = load_artifact(served_model)
    graph = export_model(art.model, art.manifest, "onnx", tmp_path / "out", batch=4)
    info = read_export(tmp_path / "out")
    assert info["source_sha256"] == art.manifest["sha256"]
    assert info["manifest"]["class_names"] == art.manifest["class_names"]
    assert (info["format"], info["batch"], info["image_size"]) == ("onnx", 4, 64)
    assert graph.name == "model.onnx" and graph.stat().st_size > 10_000
    first = cached_export(art.model, art.manifest, "onnx", "fp32", tmp_path / "cache")
    mtime = first.stat().st_mtime_ns
    again = cached_export(art.model, art.manifest, "onnx", "fp32", tmp_path / "cache")
    assert again == first and again.stat().st_mtime_ns == mtime  # not exported twice
    assert art.manifest["sha256"][:24] in str(first)
    json.loads((first.parent / "export.json").read_text())


def test_bf16_on_openvino_is_close_and_opt_in(served_model, tmp_path):
    if "openvino" not in RUNTIMES:
        pytest.skip("openvino not installed")
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16: OpenVINO would refuse it (tested below)")
    art = load_artifact(served_model)
    x = torch.rand(4, 3, 64, 64)
    ref = art.model.predict(x)
    pred = build_runtime("openvino", art.model, art.manifest, CPU, "bf16", tmp_path).predict(x)
    assert (pred.score - ref.score).abs().max() < 0.05 * ref.score.abs().max()


def test_clear_errors_for_what_cannot_be_built(served_model, tmp_path):
    art = load_artifact(served_model)
    with pytest.raises(ConfigError, match="unknown; use one of"):
        build_runtime("tflite", art.model, art.manifest, CPU, "fp32", tmp_path)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        build_runtime("torch", art.model, art.manifest, CPU, "bf16", tmp_path)
    with pytest.raises(ConfigError, match="format 'pb' unknown"):
        export_model(art.model, art.manifest, "pb", tmp_path / "x")
    with pytest.raises(ConfigError, match="not an rlr export"):
        read_export(tmp_path)
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs a CUDA GPU; none here")
def test_tensorrt_matches_torch_on_a_gpu(served_model, tmp_path):  # pragma: no cover - GPU only
    pytest.importorskip("tensorrt")
    dev = torch.device("cuda")
    art = load_artifact(served_model, device=dev)
    x = torch.rand(8, 3, 64, 64, device=dev)
    ref = art.model.predict(x, bf16=False)
    pred = build_runtime("tensorrt", art.model, art.manifest, dev, "fp32", tmp_path, 8).predict(x)
    assert np.allclose(pred.score.cpu(), ref.score.cpu(), rtol=1e-3)


def test_measure_counts_frames(served_model, tmp_path):
    art = load_artifact(served_model)
    rt = build_runtime("torch", art.model, art.manifest, CPU, "fp32", tmp_path)
    assert measure(rt, 2, seconds=0.05) > 0


@pytest.mark.slow
def test_threads_bound_each_runtime_and_keep_its_scores(tmp_path):
    # RLR_THREADS: a worker process per core on a CPU host computes with one thread each.
    model = _random_model("tiny")
    manifest = {"sha256": "threads-" + "0" * 40}
    x = torch.rand(2, 3, 64, 64)
    ref = model.predict(x)
    before = torch.get_num_threads()
    try:
        rt = build_runtime("torch", model, manifest, CPU, "fp32", tmp_path, threads=1)
        assert torch.get_num_threads() == 1
        _close(rt.predict(x), ref)
        if "onnxruntime" in RUNTIMES:
            rt = build_runtime("onnxruntime", model, manifest, CPU, "fp32", tmp_path, threads=1)
            assert rt.session.get_session_options().intra_op_num_threads == 1
            _close(rt.predict(x), ref)
        if "openvino" in RUNTIMES:
            rt = build_runtime("openvino", model, manifest, CPU, "fp32", tmp_path, threads=1)
            assert int(rt.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
            _close(rt.predict(x), ref)
        with pytest.raises(ConfigError, match="threads -1"):
            build_runtime("torch", model, manifest, CPU, "fp32", tmp_path, threads=-1)
    finally:
        torch.set_num_threads(before)
