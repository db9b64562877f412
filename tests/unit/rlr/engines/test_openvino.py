"""The openvino engine: fp32 like torch, bf16 close and opt-in, its IR export, its threads."""

from __future__ import annotations

import pytest
import torch

from rlr.artifact import load_artifact
from rlr.engines import create_engine, export_model, read_export
from tests.unit.rlr.engines.helpers import CPU, EXPORTED, close, random_model

pytestmark = pytest.mark.skipif("openvino" not in EXPORTED, reason="openvino missing")


def test_bf16_on_openvino_is_close_and_opt_in(served_model, tmp_path):
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16: OpenVINO would refuse it")
    art = load_artifact(served_model)
    x = torch.rand(4, 3, 64, 64)
    ref = art.model.predict(x)
    pred = create_engine("openvino", art.model, art.manifest, CPU, "bf16", tmp_path).predict(x)
    assert (pred.score - ref.score).abs().max() < 0.05 * ref.score.abs().max()


def test_openvino_ir_export_keeps_only_the_ir(tmp_path):
    model = random_model("tiny")
    graph = export_model(model, {"sha256": "v-" + "0" * 40}, "openvino", tmp_path / "ov",
                         precision="fp16")
    assert graph.name == "model.xml" and not (tmp_path / "ov" / "model.onnx").exists()
    assert read_export(tmp_path / "ov")["precision"] == "fp16"


def test_openvino_threads_keep_the_scores(tmp_path):
    model = random_model("tiny")
    x = torch.rand(2, 3, 64, 64)
    before = torch.get_num_threads()
    try:
        rt = create_engine("openvino", model, {"sha256": "v-" + "0" * 40}, CPU, "fp32",
                           tmp_path, threads=1)
        assert int(rt.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        close(rt.predict(x), model.predict(x))
    finally:
        torch.set_num_threads(before)
