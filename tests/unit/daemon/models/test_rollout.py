"""Rollout routing: which model version serves a camera; the stored record read field by field,
damage shown as corrupt; pure, no Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from daemon.models.rollout import Rollout, parse_rollout, stable_bucket

CAMERAS = [f"cam-{i:04d}" for i in range(1000)]


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


GOOD = {"production": "m-000000000001", "previous": None, "canary": "m-000000000002",
        "canary_cameras": [], "canary_percent": 10.0, "shadow": None, "revision": 3,
        "updated_at": 1.7e9, "updated_by": "ana@host"}


@pytest.mark.parametrize("raw, why", [
    ('{"canary_percent": "abc"}', 'canary_percent: "abc" is not a finite number'),
    ('{"updated_at": "yesterday"}', 'updated_at: "yesterday" is not a finite number'),
    ('{"canary_percent": 250}', "canary_percent: 250 is not in [0, 100]"),
    ('{"canary_cameras": ["a", 7]}', "canary_cameras: "),
    ('{"canary_cameras": "cam1"}', "not a list"),
    ('{"revision": true}', "revision: true is not an integer"),
    ('{"production": 12}', "production: 12 is not a str"),
    ('{"updated_by": null}', "updated_by: null is not a str"),
    ('{"updated_at": NaN}', "updated_at: NaN is not a finite number"),
    ("not json{", "Expecting value"), ("[1, 2]", "a JSON list, not an object"),
    (b"\xff\xfe", "Expecting value")])
def test_every_field_of_a_damaged_rollout_record_reads_as_corrupt(raw, why):
    stored = raw if isinstance(raw, bytes) or not raw.startswith("{") else \
        json.dumps({**GOOD, **json.loads(raw)})
    ro = parse_rollout("l1", stored, b"4")
    assert ro.corrupt and why in ro.corrupt, ro.corrupt
    assert (ro.production, ro.canary, ro.revision) == (None, None, 4)
    assert ro.describe_canary() == "-" and ro.route("cam") is None  # readers go on
    assert Rollout.from_json(ro.to_json()) == ro  # the CLI re-reads what status collected


def test_a_whole_rollout_record_reads_as_stored():
    ro = parse_rollout("l1", json.dumps({**GOOD, "added_later": 1}).encode(), b"3")
    assert not ro.corrupt and ro.canary_percent == 10.0 and ro.line == "l1"
    assert ro.describe_canary() == "m-000000000002 (10% of cameras)"
    assert parse_rollout("l1", None) == Rollout("l1")
    assert parse_rollout("l1", "{}", b"x").corrupt is None  # every field has a default
