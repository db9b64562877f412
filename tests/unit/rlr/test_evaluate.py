"""Evaluation on MVTec-, VisA- and ELPV-shaped data and the written report."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rlr.datasets import load_dataset
from rlr.evaluate import evaluate, extremes
from rlr.report import console_table, write_report
from tests.helpers import make_visa_tree


@pytest.fixture(scope="module")
def mvtec_report(tiny_trained, synthetic_root):
    ds = load_dataset("mvtec", synthetic_root)
    return ds, evaluate(tiny_trained.model, ds, batch_size=8, progress=False)


def test_per_class_image_and_pixel_metrics(mvtec_report):
    ds, rep = mvtec_report
    assert set(rep.per_class) == {"fabric", "tile", "washer"}
    for cls, row in rep.per_class.items():
        assert row["n_normal"] == 4 and row["n_anomalous"] == 8
        recs = [r for r in rep.records if r.class_name == cls]
        want = roc_auc_score([r.label for r in recs], [r.score for r in recs])
        assert row["image_auroc"] == pytest.approx(want, abs=1e-12)
        for key in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro"):
            assert 0.0 <= row[key] <= 1.0
    assert rep.mean["image_auroc"] == pytest.approx(
        np.mean([r["image_auroc"] for r in rep.per_class.values()]))
    assert rep.mean["image_auroc"] >= 0.85
    assert rep.mean["pixel_auroc"] >= 0.85  # drawn defects light up where they are
    assert len(rep.records) == len(ds.test)


def test_extremes_pick_the_cases_to_look_at(mvtec_report):
    _, rep = mvtec_report
    ext = extremes(rep, k=2)
    for cls, kinds in ext.items():
        normals = [r.score for r in rep.records if r.class_name == cls and r.label == 0]
        anomalies = [r.score for r in rep.records if r.class_name == cls and r.label == 1]
        assert [r.score for r in kinds["normal_high"]] == sorted(normals, reverse=True)[:2]
        assert [r.score for r in kinds["anomalous_low"]] == sorted(anomalies)[:2]


def test_report_files(mvtec_report, tiny_trained, tmp_path):
    _, rep = mvtec_report
    out = write_report(rep, tmp_path / "rep", tiny_trained.model, overlays_per_kind=1)
    data = json.loads((out / "report.json").read_text())
    assert data["per_class"]["tile"]["image_auroc"] == rep.per_class["tile"]["image_auroc"]
    md = (out / "report.md").read_text()
    assert "| fabric |" in md and "**mean**" in md and "roc.png" in md
    assert (out / "roc.png").stat().st_size > 1000 and (out / "pr.png").stat().st_size > 1000
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 3 * 2  # one highest normal + one lowest anomaly per class
    assert "mean" in console_table(rep)


def test_visa_layout_gives_the_same_image_metrics(tiny_trained, synthetic_root, mvtec_report,
                                                  tmp_path):
    visa = load_dataset("visa", make_visa_tree(synthetic_root, tmp_path / "visa"))
    rep = evaluate(tiny_trained.model, visa, progress=False)
    assert set(rep.per_class) == {"fabric", "tile", "washer"}
    for cls, row in rep.per_class.items():
        # JPEG re-encoding moves scores a little; rankings of drawn defects must hold
        assert row["image_auroc"] >= mvtec_report[1].per_class[cls]["image_auroc"] - 0.15
        assert row["pixel_auroc"] > 0.8


def test_elpv_groups_are_reported_apart(tiny_trained):
    ds = load_dataset("elpv")
    rng = np.random.default_rng(0)
    keep = []
    for cls in ds.class_names:
        for pred in (lambda s: s.label == 0, lambda s: s.label == 1 and not s.group,
                     lambda s: s.group == "p=1/3", lambda s: s.group == "p=2/3"):
            pool = [s for s in ds.test if s.class_name == cls and pred(s)]
            keep += [pool[i] for i in rng.choice(len(pool), 3, replace=False)]
    small = dataclasses.replace(ds, test=tuple(keep))
    rep = evaluate(tiny_trained.model, small, progress=False)
    assert set(rep.per_class) == {"mono", "poly"}
    assert set(rep.groups) == {"mono p=1/3", "mono p=2/3", "poly p=1/3", "poly p=2/3"}
    for row in rep.per_class.values():
        assert row["n_normal"] == 3 and row["n_anomalous"] == 3  # groups not in the headline
        assert "pixel_auroc" not in row  # ELPV has image labels only
    assert rep.groups["mono p=1/3"]["n_anomalous"] == 3
    assert not math.isnan(rep.mean["image_auroc"])
