"""`auto`: engines measured here, the fastest kept; a bench record is taken without measuring."""

from __future__ import annotations

from rlr.artifact import load_artifact
from rlr.engines import bench_record, create_engine, measure, pick_fastest, write_bench_record
from tests.unit.rlr.engines.helpers import CPU, EXPORTED


def test_measure_counts_frames(served_model, tmp_path):
    art = load_artifact(served_model)
    rt = create_engine("torch", art.model, art.manifest, CPU, "fp32", tmp_path)
    assert measure(rt, 2, seconds=0.05) > 0


def test_pick_fastest_measures_every_engine_here_then_takes_the_record(served_model, tmp_path):
    art = load_artifact(served_model)
    engine, fps = pick_fastest(art.model, art.manifest, CPU, 2, tmp_path, seconds=0.05)
    assert set(fps) == {"torch", *EXPORTED}
    assert engine.name == max(fps, key=fps.get)
    write_bench_record(art.manifest, 2, {"torch": 1.0, "onnxruntime": 9.0}, tmp_path)
    assert bench_record(art.manifest, tmp_path)["best"] == "onnxruntime"
    engine, fps = pick_fastest(art.model, art.manifest, CPU, 2, tmp_path)
    assert engine.name == "onnxruntime" and fps == {"torch": 1.0, "onnxruntime": 9.0}
