"""Evaluation of a model on a data set's test split: per-class and mean metrics.

Every test image is scored once. Headline metrics use the normal images and the headline
anomalies; samples with a `group` (ELPV's p = 1/3 and 2/3) are scored against the same normals
and reported as their own rows. Pixel metrics are computed when the data set has masks.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlr.calibrate import threshold_of
from rlr.data import load_mask
from rlr.datasets import Dataset
from rlr.inference import score_samples
from rlr.metrics import image_metrics, mean_over_classes, pixel_metrics
from rlr.model import RLRModel

IMAGE_KEYS = ("auroc", "ap", "f1_max")
PIXEL_KEYS = ("auroc", "ap", "f1_max", "aupro")


@dataclass
class ImageRecord:
    path: str
    class_name: str
    label: int
    group: str
    score: float
    mask_path: str | None = None


@dataclass
class EvalReport:
    dataset: dict[str, Any]
    model: dict[str, Any]
    per_class: dict[str, dict[str, float]]  # class -> {"image_auroc": ..., "pixel_aupro": ...}
    mean: dict[str, float]
    groups: dict[str, dict[str, float]]  # "mono p=1/3" -> image metrics
    records: list[ImageRecord] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["records"] = [asdict(r) for r in self.records]
        return d

    def metric_columns(self) -> list[str]:
        cols = [f"image_{k}" for k in IMAGE_KEYS]
        if any("pixel_auroc" in m for m in self.per_class.values()):
            cols += [f"pixel_{k}" for k in PIXEL_KEYS]
        if any("false_alarm_rate" in m for m in self.per_class.values()):
            cols += ["false_alarm_rate", "detection_rate"]
        return cols


def evaluate(
    model: RLRModel,
    dataset: Dataset,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    pixel: bool = True,
    model_info: dict[str, Any] | None = None,
    thresholds: dict[str, float | None] | None = None,
) -> EvalReport:
    """Score every test image of `dataset` and compute image (and pixel) metrics per class.

    With calibrated `thresholds` (class or "default" -> score), each class row also gets the
    false-alarm rate and the detection rate at its threshold.
    """
    size = model.image_size
    use_pixel = pixel and dataset.has_masks
    t0 = time.perf_counter()
    bar = tqdm(total=len(dataset.test), desc="evaluate", unit="img", disable=not progress)
    per_class: dict[str, dict[str, float]] = {}
    groups: dict[str, dict[str, float]] = {}
    records: list[ImageRecord] = []
    for cls in dataset.class_names:
        samples = dataset.test_of(cls, None)
        if not samples:
            continue
        bar.set_postfix_str(cls)
        scores, maps = score_samples(model, samples, batch_size, device, keep_maps=use_pixel,
                                     on_batch=bar.update)
        labels = np.array([s.label for s in samples])
        grp = np.array([s.group for s in samples])
        records += [ImageRecord(str(s.path), cls, s.label, s.group, float(v),
                                str(s.mask_path) if s.mask_path else None)
                    for s, v in zip(samples, scores, strict=True)]
        headline = grp == ""
        row = {f"image_{k}": v for k, v in
               image_metrics(scores[headline], labels[headline]).items() if k in IMAGE_KEYS}
        if use_pixel:
            masks = np.stack([
                load_mask(s.mask_path, size) if s.mask_path else np.zeros((size, size), bool)
                for s in np.asarray(samples, dtype=object)[headline]
            ])
            px = pixel_metrics(maps[headline].astype(np.float32), masks)
            row |= {f"pixel_{k}": v for k, v in px.items() if k in PIXEL_KEYS}
        t = threshold_of(thresholds or {}, cls)
        if t is not None:
            flagged = scores[headline] > t
            row["threshold"] = float(t)
            row["false_alarm_rate"] = float(flagged[labels[headline] == 0].mean())
            row["detection_rate"] = (float(flagged[labels[headline] == 1].mean())
                                     if (labels[headline] == 1).any() else float("nan"))
        row["n_normal"] = int((labels[headline] == 0).sum())
        row["n_anomalous"] = int((labels[headline] == 1).sum())
        per_class[cls] = row
        for g in sorted(set(grp) - {""}):
            sel = (labels == 0) | (grp == g)
            m = image_metrics(scores[sel], (grp[sel] == g).astype(int))
            groups[f"{cls} {g}"] = {f"image_{k}": m[k] for k in IMAGE_KEYS} | {
                "n_normal": int((labels[sel] == 0).sum()), "n_anomalous": int((grp == g).sum())}
    bar.close()
    seconds = time.perf_counter() - t0
    metric_rows = {c: {k: v for k, v in r.items() if not k.startswith("n_") and k != "threshold"}
                   for c, r in per_class.items()}
    return EvalReport(
        dataset=dataset.summary(),
        model=model_info or {},
        per_class=per_class,
        mean=mean_over_classes(metric_rows) if metric_rows else {},
        groups=groups,
        records=records,
        seconds=seconds,
        images_per_second=len(records) / seconds if seconds > 0 else 0.0,
    )


def extremes(report: EvalReport, k: int = 3) -> dict[str, dict[str, list[ImageRecord]]]:
    """Per class: the k highest-scoring normals and the k lowest-scoring headline anomalies."""
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in report.records:
        if r.group == "":
            by_class[r.class_name].append(r)
    out = {}
    for cls, recs in by_class.items():
        normals = sorted((r for r in recs if r.label == 0), key=lambda r: -r.score)[:k]
        anomalies = sorted((r for r in recs if r.label == 1), key=lambda r: r.score)[:k]
        out[cls] = {"normal_high": normals, "anomalous_low": anomalies}
    return out
