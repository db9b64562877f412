"""Rollout routing: which model version serves a camera; pure, no Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon.models.rollout import Rollout, stable_bucket

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
