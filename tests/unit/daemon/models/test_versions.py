"""Model version records: JSON (damage read as corrupt), calibration state, key metrics,
preset; pure, no Redis."""

from __future__ import annotations

import json

import pytest

from daemon.cli.models import key_metrics
from daemon.models.rollout import Rollout
from daemon.models.versions import ModelVersion, _preset, parse_version


def _version(**changes) -> ModelVersion:
    base = dict(id="m-0123456789ab", sha256="0123456789ab" + "0" * 52, size_bytes=1234,
                created_at=1.7e9, created_by="ana@host", source_job=None, note="",
                class_names=["tile", "washer"], preset="tiny", image_size=64,
                thresholds={"tile": 0.5, "washer": None, "default": 0.4}, metrics={})
    return ModelVersion(**{**base, **changes})


def test_json_round_trips_and_ignores_unknown_fields():
    ro = Rollout("l1", production="m-a", previous="m-p", canary="m-b", canary_cameras=["c1"],
                 shadow="m-c", revision=7, updated_at=1.5, updated_by="x@y")
    assert Rollout.from_json(ro.to_json()) == ro
    assert Rollout.from_json({**ro.to_json(), "added_later": 1}) == ro
    v = _version(metrics={"mean": {"image_auroc": 0.97}}, blob_sha256="ab" * 32,
                 training={"best_val_loss": 0.25})
    assert ModelVersion.from_json(v.to_json()) == v
    assert ModelVersion.from_json({**v.to_json(), "new": "x"}) == v


def test_calibrated_and_key_metrics():
    assert _version().calibrated == "partly"
    assert _version(thresholds={"a": None, "default": None}).calibrated == "no"
    assert _version(thresholds={"a": 1.0, "default": 2.0}).calibrated == "yes"
    v = _version(metrics={"calibration": {"far": 0.01},
                          "eval": {"per_class": {"tile": {"image_auroc": 0.5}},
                                   "mean": {"image_auroc": 0.9}}},
                 training={"best_val_loss": 0.3})
    assert key_metrics(v) == {"image_auroc": 0.9, "val_loss": 0.3}
    assert key_metrics(_version()) == {"image_auroc": None, "val_loss": None}


def test_preset_is_recognised_from_the_architecture():
    from rlr.config import PRESETS

    for name, cfg in PRESETS.items():
        assert _preset({"config": cfg.to_dict()}) == name
    assert _preset({"config": {"preset": "custom"}}) == "custom"
    assert _preset({"config": {"levels": []}}) is None


@pytest.mark.parametrize("change, why", [
    ({"created_at": "yesterday"}, 'created_at: "yesterday" is not a finite number'),
    ({"size_bytes": "12 kB"}, "size_bytes: "), ({"class_names": "tile"}, "not a list"),
    ({"thresholds": {"tile": "high"}}, 'thresholds: tile: "high" is not a number'),
    ({"thresholds": []}, "thresholds: [] is not a dict"),
    ({"training": {"best_val_loss": "low"}}, "best_val_loss is not a number"),
    ({"created_by": None}, "created_by: null is not a str"),
    ({"id": "m-ffffffffffff"}, "differs from its key")])
def test_every_field_of_a_damaged_version_record_reads_as_corrupt(change, why):
    stored = json.dumps({**_version().to_json(), **change})
    v = parse_version("m-0123456789ab", stored.encode())
    assert v.corrupt and why in v.corrupt, v.corrupt
    assert v.id == "m-0123456789ab" and v.calibrated == "no" and v.class_names == []
    assert key_metrics(v) == {"image_auroc": None, "val_loss": None}


@pytest.mark.parametrize("raw", [b"not json{", b'"a string"', b"\xff", b'{"id": "m-0"}'])
def test_an_unreadable_version_entry_reads_as_corrupt(raw):
    v = parse_version("m-0123456789ab", raw)
    assert v.corrupt and v.to_json()["corrupt"] == v.corrupt
    good = _version()
    assert parse_version(good.id, json.dumps(good.to_json())) == good
    assert "corrupt" not in good.to_json()
