"""Registry records and rollout routing: pure parts, no Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon.cli.models import key_metrics
from daemon.models.registry import _canary_scope
from daemon.models.rollout import Rollout, stable_bucket
from daemon.models.versions import ModelVersion, _preset

CAMERAS = [f"cam-{i:04d}" for i in range(1000)]


def _version(**changes) -> ModelVersion:
    base = dict(id="m-0123456789ab", sha256="0123456789ab" + "0" * 52, size_bytes=1234,
                created_at=1.7e9, created_by="ana@host", source_job=None, note="",
                class_names=["tile", "washer"], preset="tiny", image_size=64,
                thresholds={"tile": 0.5, "washer": None, "default": 0.4}, metrics={})
    return ModelVersion(**{**base, **changes})


def test_stable_bucket_is_the_same_in_another_process():
    code = ("from daemon.models.registry import stable_bucket; "
            "print(repr([stable_bucket(f'cam-{i:04d}') for i in range(5)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == repr([stable_bucket(c) for c in CAMERAS[:5]])
    assert all(0.0 <= stable_bucket(c) < 100.0 for c in CAMERAS)


def test_route_sends_listed_cameras_to_the_canary_and_the_rest_to_production():
    ro = Rollout("l1", production="m-prod", canary="m-can", canary_cameras=["cam-0003"],
                 canary_percent=50.0)  # the explicit list wins over the percent
    assert ro.route("cam-0003") == "m-can"
    assert {ro.route(c) for c in CAMERAS if c != "cam-0003"} == {"m-prod"}


@pytest.mark.parametrize("percent", [10.0, 25.0, 50.0])
def test_route_by_percent_is_roughly_proportional_and_stable(percent):
    ro = Rollout("l1", production="m-prod", canary="m-can", canary_percent=percent)
    share = sum(ro.route(c) == "m-can" for c in CAMERAS) / len(CAMERAS) * 100
    assert abs(share - percent) < 5.0
    assert [ro.route(c) for c in CAMERAS] == [ro.route(c) for c in CAMERAS]
    # Raising the percent only adds cameras: none flips back to production.
    wider = Rollout("l1", production="m-prod", canary="m-can", canary_percent=percent + 10)
    assert all(wider.route(c) == "m-can" for c in CAMERAS if ro.route(c) == "m-can")


def test_route_without_canary_or_production():
    assert Rollout("l1").route("cam") is None
    ro = Rollout("l1", production="m-prod", canary=None, canary_percent=100.0)
    assert ro.route("cam") == "m-prod"
    assert Rollout("l1", canary="m-c", canary_percent=0.0, production="m-p").route("x") == "m-p"


def test_versions_and_references():
    ro = Rollout("l1", production="m-a", previous="m-p", canary="m-b", shadow="m-c")
    assert ro.versions() == {"m-a", "m-b", "m-c"}
    assert ro.references() == {"m-a", "m-b", "m-c", "m-p"}
    assert Rollout("l1").versions() == set()


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


def test_canary_scope_needs_exactly_one_of_cameras_or_percent():
    from daemon.models.registry import RegistryError

    assert _canary_scope([" b", "a", "b"], None) == (["a", "b"], 0.0)
    assert _canary_scope(None, 10) == ([], 10.0)
    for cams, pct in [(None, None), (["a"], 5.0), (None, 0.0), (None, 101.0), ([""], None)]:
        with pytest.raises(RegistryError):
            _canary_scope(cams, pct)


def test_preset_is_recognised_from_the_architecture():
    from rlr.config import PRESETS

    for name, cfg in PRESETS.items():
        assert _preset({"config": cfg.to_dict()}) == name
    assert _preset({"config": {"preset": "custom"}}) == "custom"
    assert _preset({"config": {"levels": []}}) is None
