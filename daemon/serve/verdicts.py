"""From a batch of frames to verdicts and results, as plain functions: route frames to models,
score, draw masks, build results. Runs on the worker's threads; no Redis, no asyncio."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from daemon.serve.served_model import Scores, ServedModel
from daemon.serve.serving import ServingSet
from daemon.wire.codec import mask_png
from daemon.wire.groups import Delivery
from daemon.wire.schema import Frame, Result


class Verdict(NamedTuple):
    """A model's verdict on one frame."""

    version: str
    score: float
    threshold: float | None
    anomalous: bool
    mask: np.ndarray | bytes | None  # anomaly map to draw from, then the PNG


def infer_batch(serving: ServingSet, lines: list[str], frames: list[Frame],
                images: list[np.ndarray], masks: str,
                thresholds: list[float | None] | None = None):
    """(verdicts, shadow verdicts [(index, verdict)], inference ms) for one batch.
    `thresholds`: per frame, the recipe's threshold (None: the model's own for the class).

    One sub-batch per model the rollout routes frames to; a line's shadow model scores that
    line's frames too, for the shadow stream only (no masks, no alerts)."""
    verdicts: list = [None] * len(frames)
    groups: dict[str, tuple[ServedModel, list[int]]] = {}
    for i, (line, frame) in enumerate(zip(lines, frames, strict=True)):
        served = serving.model_for(line, frame.camera)
        groups.setdefault(served.version, (served, []))[1].append(i)
    infer_ms = 0.0
    for served, idx in groups.values():
        scores = served.infer([images[i] for i in idx])
        infer_ms += scores.infer_ms
        for j, i in enumerate(idx):
            verdicts[i] = verdict(served, frames[i], scores, j, masks,
                                  thresholds[i] if thresholds else None)
    shadow = []
    for line in sorted(set(lines)):
        served = serving.shadow_for(line)
        if served is None:
            continue
        idx = [i for i, ln in enumerate(lines) if ln == line]
        scores = served.infer([images[i] for i in idx])
        shadow += [(i, verdict(served, frames[i], scores, j, "off"))
                   for j, i in enumerate(idx)]
    return verdicts, shadow, infer_ms


def verdict(served: ServedModel, frame: Frame, scores: Scores, j: int, masks: str,
            override: float | None = None) -> Verdict:
    """`masks`: RLR_MASKS (anomalous / always / never; a frame can still ask for one), or
    "off" (shadow models: no masks at all). `override`: a recipe's threshold."""
    score = float(scores.scores[j])
    threshold = override if override is not None else served.threshold(frame.product_class)
    anomalous = threshold is not None and score > threshold
    want = masks != "off" and (frame.want_mask or masks == "always" or
                               (masks == "anomalous" and anomalous))
    return Verdict(served.version, score, threshold, anomalous,
                   scores.maps[j] if want and threshold is not None else None)


def draw_masks(verdicts: list[Verdict]) -> list[Verdict]:
    return [v if v.mask is None else v._replace(mask=mask_png(v.mask, v.threshold))
            for v in verdicts]


def make_result(frame: Frame, delivery: Delivery, v: Verdict, start: float, infer_ms: float,
                now: float, worker: str) -> Result:
    return Result(frame.frame_id, frame.camera, v.score, v.anomalous, v.threshold, v.version,
                  frame.ts, max(0.0, start * 1000 - delivery.enqueued_ms), infer_ms,
                  (now - frame.ts) * 1000, worker, frame.product_class, v.mask, frame.part,
                  frame.view)
