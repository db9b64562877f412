"""The torch engine: the model itself; bf16 only on CUDA; compile modes checked."""

from __future__ import annotations

import pytest
import torch

from rlr.artifact import load_artifact
from rlr.engines import create_engine, export_model, get
from rlr.errors import ConfigError
from tests.unit.rlr.engines.helpers import CPU, close, random_model


def test_torch_scores_what_the_model_scores_and_exports_torchscript(tmp_path):
    model = random_model("tiny")
    x = torch.rand(2, 3, 64, 64)
    engine = create_engine("torch", model, {"sha256": "t-" + "0" * 40}, CPU, "fp32", tmp_path)
    assert (engine.name, engine.precision, engine.image_size) == ("torch", "fp32", 64)
    close(engine.predict(x), model.predict(x))
    graph = export_model(model, {"sha256": None}, "torchscript", tmp_path / "ts")
    assert graph.name == "model.pt"
    assert [f.name for f in get("torch").formats] == ["torchscript"]


def test_torch_refuses_bf16_on_the_cpu_and_unknown_compile_modes(served_model, tmp_path):
    art = load_artifact(served_model)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        create_engine("torch", art.model, art.manifest, CPU, "bf16", tmp_path)
    with pytest.raises(ConfigError, match="compile mode 'fast'"):
        create_engine("torch", art.model, art.manifest, CPU, "fp32", tmp_path, compile="fast")
