"""Helpers of the engine tests: a preset with random weights, and "computes the same"."""

from __future__ import annotations

import torch

from rlr.config import preset
from rlr.engines import available
from rlr.model import create_model

CPU = torch.device("cpu")
EXPORTED = [r for r in ("onnxruntime", "openvino") if r in available(CPU)]


def close(pred, ref) -> None:
    """fp32 agreement: scores within 1e-4 relative, maps within 1e-4 absolute."""
    score, amap = pred.score.float(), pred.anomaly_map.float()
    rel = ((score - ref.score).abs() / ref.score.abs().clamp_min(1e-6)).max().item()
    assert rel < 1e-4, rel
    assert (amap - ref.anomaly_map).abs().max().item() < 1e-4


def random_model(name: str, seed: int = 0):
    """A preset with random (not zero) reconstructor weights, so the whole graph is exercised."""
    torch.manual_seed(seed)
    model = create_model(preset(name), load_backbone_weights=name != "paper").eval()
    with torch.no_grad():
        for level in model.reconstructor.levels:
            level.reference.normal_(0, 1)
    return model
