from __future__ import annotations

import pytest
import torch

from rlr.device import resolve_device
from rlr.errors import ConfigError


def test_auto_and_none_pick_what_is_there() -> None:
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device(None).type == want
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigError, match=r"no CUDA device.*cpu or auto"):
        resolve_device("cuda:0")


def test_unknown_device_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown device 'gpu0'.*auto, cpu, cuda"):
        resolve_device("gpu0")
