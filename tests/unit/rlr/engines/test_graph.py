"""Exported graphs compute what the model computes: every preset's graph on ONNX Runtime,
OpenVINO and TorchScript against torch (fp32: scores within 1e-4 relative, maps within 1e-4
absolute), on synthetic images and on real ELPV cells; exports are traceable and cached, and
a cached export is loaded only when its files are the ones exported (else exported again, or
refused)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from rlr.artifact import load_artifact
from rlr.data import list_images, load_image, to_tensor
from rlr.engines import available, create_engine, export_model, read_export
from rlr.engines.graph import ONNX, SEAL, cached_export, check_seal, exporter
from rlr.errors import CacheDamaged, ConfigError
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


# --------------------------------------------------------------- verified caches (issue 30)

SHA = "c-" + "1" * 40


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny preset exported once for each engine; a test damages a copy of the cache."""
    model, root = random_model("tiny"), tmp_path_factory.mktemp("exported")
    for name in EXPORTED:
        create_engine(name, model, {"sha256": SHA}, CPU, "fp32", root)
    return model, root


def _engine(name, model, cache, **kw):
    return create_engine(name, model, {"sha256": SHA}, CPU, "fp32", cache, **kw)


def _copy(exported, tmp_path, fmt: str) -> tuple[Path, Path]:
    """A private copy of the exported cache, and the folder of `fmt`'s export in it."""
    shutil.copytree(exported[1], tmp_path / "cache")
    return tmp_path / "cache", next((tmp_path / "cache").glob(f"*/{fmt}-fp32"))


def _flip(path: Path, n: int = 160) -> None:
    """Flip the sign bits of `n` bytes among the weights near the end: the file keeps its
    size (and may still load), and computes something else."""
    data = bytearray(path.read_bytes())
    at = len(data) - 4096
    data[at:at + n] = bytes(b ^ 0x80 for b in data[at:at + n])
    path.write_bytes(bytes(data))


def test_export_records_each_files_sha256_bound_to_the_artifact(exported, tmp_path):
    _, folder = _copy(exported, tmp_path, "openvino")
    record = json.loads((folder / SEAL).read_text())
    assert set(record["files"]) == {"model.xml", "model.bin", "export.json"}
    assert record["files"]["model.bin"] == hashlib.sha256(
        (folder / "model.bin").read_bytes()).hexdigest()
    assert record["source_sha256"] == SHA and record["exporter"] == exporter()
    assert check_seal(folder, SHA) is None
    assert "recorded for artifact" in check_seal(folder, "another")[1]


@pytest.mark.parametrize("engine, fmt, damage", [
    ("onnxruntime", "onnx", "flip"), ("onnxruntime", "onnx", "truncate"),
    ("openvino", "openvino", "flip"),
    pytest.param("openvino", "openvino", "truncate", marks=pytest.mark.slow),
    pytest.param("onnxruntime", "onnx", "no-record", marks=pytest.mark.slow)])
def test_a_damaged_cache_is_exported_again_and_scores_like_torch(exported, engine, fmt,
                                                                 damage, tmp_path):
    model, x = exported[0], torch.rand(2, 3, 64, 64)
    cache, folder = _copy(exported, tmp_path, fmt)
    target = folder / ("model.onnx" if fmt == "onnx" else "model.bin")
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    else:
        _flip(target)
    if damage == "no-record":  # as a cache written before records were kept: never loaded
        (folder / SEAL).unlink()
    warned = []
    rt = _engine(engine, model, cache, warn=lambda event, **f: warned.append((event, f)))
    close(rt.predict(x), model.predict(x))
    assert [e for e, _ in warned] == ["engine_cache_damaged"]
    assert warned[0][1]["file"] == str(folder / SEAL if damage == "no-record" else target)
    assert warned[0][1]["action"] == "exported again"
    assert check_seal(folder, SHA) is None  # whole and sealed again


def test_a_damaged_cache_is_refused_in_one_line_when_asked(exported, tmp_path):
    cache, folder = _copy(exported, tmp_path, "onnx")
    target = folder / "model.onnx"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(CacheDamaged) as err:
        _engine("onnxruntime", exported[0], cache, on_damage="refuse",
                warn=lambda *a, **k: None)
    msg = str(err.value)
    assert "\n" not in msg and str(target) in msg and "sha256 differs" in msg
    assert target.stat().st_size == 1000  # left as found, for whoever looks into it
    with pytest.raises(ConfigError, match="on_damage 'ignore'"):
        _engine("onnxruntime", exported[0], cache, on_damage="ignore")
