"""The tensorrt engine: listed everywhere, runnable only on a CUDA device; on a GPU it scores
like torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlr.artifact import load_artifact
from rlr.engines import available, get
from tests.unit.rlr.engines.helpers import CPU


def test_tensorrt_is_registered_but_never_available_on_the_cpu():
    kind = get("tensorrt")
    assert kind.needs_cuda and kind.extra == "tensorrt"
    assert "tensorrt" not in available(CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs a CUDA GPU; none here")
def test_tensorrt_matches_torch_on_a_gpu(served_model, tmp_path):  # pragma: no cover - GPU only
    pytest.importorskip("tensorrt")
    from rlr.engines import create_engine

    dev = torch.device("cuda")
    art = load_artifact(served_model, device=dev)
    x = torch.rand(8, 3, 64, 64, device=dev)
    ref = art.model.predict(x, bf16=False)
    pred = create_engine("tensorrt", art.model, art.manifest, dev, "fp32", tmp_path, 8).predict(x)
    assert np.allclose(pred.score.cpu(), ref.score.cpu(), rtol=1e-3)
