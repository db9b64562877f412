"""The onnxruntime engine: fp32 only, its threads bounded, its install hint one line."""

from __future__ import annotations

import pytest
import torch

from rlr.engines import create_engine, get
from rlr.engines.base import require
from rlr.errors import ConfigError
from tests.unit.rlr.engines.helpers import CPU, EXPORTED, close, random_model

pytestmark = pytest.mark.skipif("onnxruntime" not in EXPORTED, reason="onnxruntime missing")


def test_onnxruntime_serves_fp32_only(tmp_path):
    model = random_model("tiny")
    with pytest.raises(ConfigError, match="onnxruntime serves fp32 here"):
        create_engine("onnxruntime", model, {"sha256": "o-" + "0" * 40}, CPU, "bf16", tmp_path)
    with pytest.raises(ConfigError, match="torch engine only"):
        create_engine("onnxruntime", model, {"sha256": "o-" + "0" * 40}, CPU, "fp32", tmp_path,
                      compile="default")


def test_onnxruntime_threads_keep_the_scores(tmp_path):
    model = random_model("tiny")
    x = torch.rand(2, 3, 64, 64)
    before = torch.get_num_threads()
    try:
        rt = create_engine("onnxruntime", model, {"sha256": "o-" + "0" * 40}, CPU, "fp32",
                           tmp_path, threads=1)
        assert rt.session.get_session_options().intra_op_num_threads == 1
        close(rt.predict(x), model.predict(x))
    finally:
        torch.set_num_threads(before)


def test_a_missing_package_says_which_extra_installs_it():
    kind = get("onnxruntime")
    assert (kind.requires, kind.extra) == ("onnxruntime", "onnx")
    with pytest.raises(ConfigError, match=r"pip install 'rlr\[onnx\]'"):
        require("onnxruntime_not_here", "onnx")
