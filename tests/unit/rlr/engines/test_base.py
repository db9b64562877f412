"""The engine registry: the folder's modules found by name, a new file found without any other
edit, unknown names refused with the registered ones listed; `create_engine`'s shared checks."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

import rlr.engines
from rlr.engines import base, create_engine, get, names
from rlr.errors import ConfigError
from tests.unit.rlr.engines.helpers import CPU, close, random_model

DROPPED = textwrap.dedent('''
    """The dropped engine: every image scores 0."""

    from __future__ import annotations

    import torch

    from rlr.engines.base import Build, EngineKind
    from rlr.model import Prediction


    class DroppedEngine:
        name, precision = "dropped", "fp32"

        def __init__(self, image_size: int) -> None:
            self.image_size = image_size

        def predict(self, images):
            b, s = images.shape[0], self.image_size
            return Prediction(torch.zeros(b), torch.zeros(b, s, s))


    ENGINE = EngineKind("dropped", lambda b: DroppedEngine(b.model.image_size), rank=999)
''')


@pytest.fixture
def dropped_in(tmp_path):
    """A folder searched as part of rlr/engines/, as if its files had been dropped there."""
    folder = tmp_path / "more_engines"
    folder.mkdir()
    kinds, discovered = dict(base._KINDS), base._discovered
    rlr.engines.__path__.append(str(folder))
    try:
        yield folder
    finally:
        rlr.engines.__path__.remove(str(folder))
        base._KINDS.clear()
        base._KINDS.update(kinds)
        base._discovered = discovered
        sys.modules.pop("rlr.engines.dropped", None)


def test_the_four_engines_are_registered_default_first():
    assert names()[0] == "torch"
    assert {"torch", "onnxruntime", "openvino", "tensorrt"} <= set(names())
    assert get("openvino").precisions == ("fp32", "bf16", "fp16")


def test_a_dropped_in_engine_file_is_found_and_serves(dropped_in, tmp_path):
    (dropped_in / "dropped.py").write_text(DROPPED)
    base.discover()
    assert names()[-1] == "dropped" and "dropped" in base.available(CPU)
    model = random_model("tiny")
    engine = create_engine("dropped", model, {"sha256": "d-" + "0" * 40}, CPU, "fp32", tmp_path)
    pred = engine.predict(torch.rand(3, 3, 64, 64))
    assert pred.score.shape == (3,) and pred.anomaly_map.shape == (3, 64, 64)

    from daemon.serve.served_model import EngineChoice, ServedModel

    served = ServedModel(model, {"sha256": "d" * 64, "thresholds": {}}, CPU,
                         EngineChoice("dropped", cache_dir=tmp_path))
    scores = served.infer([np.zeros((64, 64, 3), np.uint8)] * 2)
    assert served.engine_name == "dropped/fp32" and scores.scores.tolist() == [0.0, 0.0]


def test_unknown_names_are_refused_with_the_registered_ones_listed(tmp_path):
    listed = ", ".join(names())
    assert listed.startswith("torch, onnxruntime, openvino, tensorrt")
    with pytest.raises(ConfigError, match=f"engine 'tflite' unknown; use one of {listed}$"):
        create_engine("tflite", random_model("tiny"), {}, CPU, "fp32", tmp_path)


def test_a_name_registered_twice_is_refused(dropped_in):
    (dropped_in / "dropped.py").write_text(DROPPED.replace('"dropped", lambda', '"torch", lambda'))
    with pytest.raises(ConfigError, match="'torch' is registered twice"):
        base.discover()


def test_threads_bound_the_process_and_negative_is_refused(tmp_path):
    # RLR_THREADS: a worker process per core on a CPU host computes with one thread each.
    model = random_model("tiny")
    x = torch.rand(2, 3, 64, 64)
    before = torch.get_num_threads()
    try:
        rt = create_engine("torch", model, {"sha256": "t-" + "0" * 40}, CPU, "fp32", tmp_path,
                           threads=1)
        assert torch.get_num_threads() == 1
        close(rt.predict(x), model.predict(x))
        with pytest.raises(ConfigError, match="threads -1"):
            create_engine("torch", model, {}, CPU, "fp32", tmp_path, threads=-1)
    finally:
        torch.set_num_threads(before)
