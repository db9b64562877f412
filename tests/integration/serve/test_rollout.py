"""Rollouts under load with real workers: hot swap, canary routing, rollback, refusals."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections import Counter

import pytest
import safetensors.torch

from daemon.line.producer import push_images
from daemon.models.registry import ModelVersion, Registry
from daemon.wire import keys
from rlr.artifact import _encode
from tests.integration.procs import results, start_worker, wait_for, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture
def registry(rclient, line):
    reg = Registry(rclient)
    made: list[str] = []
    yield reg, made
    rclient.delete(keys.alias(line), keys.rollouts(line))
    for vid in made:
        if not reg.usage(vid):
            reg.delete(vid)


def _register(reg_made, path) -> str:
    reg, made = reg_made
    vid = reg.register_file(path, created_by="test").id
    made.append(vid)
    return vid


def _beat(rclient, name: str) -> dict:
    raw = rclient.get(keys.worker(name))
    return {} if raw is None else json.loads(raw)


def _applied(rclient, names, line: str, revision: int) -> bool:
    return all(_beat(rclient, n).get("rollouts", {}).get(line) == revision for n in names)


class Feeder(threading.Thread):
    """Pushes frames from two cameras at a steady pace until stopped."""

    def __init__(self, client, line: str, jpegs: list[bytes], fps: float = 40) -> None:
        super().__init__(daemon=True)
        self.client, self.line, self.jpegs, self.period = client, line, jpegs, 1 / fps
        self.ids: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            cam = f"cam-{i % 2}"
            self.ids += push_images(self.client, self.line, cam, [self.jpegs[i % len(self.jpegs)]])
            i += 1
            time.sleep(self.period)


def test_deploy_under_load_switches_every_worker_once_losing_nothing(
        redis_url, line, rclient, registry, served_model, alarming_model, frame_jpegs, tmp_path):
    reg, _ = registry
    old, new = _register(registry, served_model), _register(registry, alarming_model)
    reg.deploy(line, old, by="test")
    names = ("w-r1", "w-r2")
    workers = [start_worker(redis_url, line, None, n, tmp_path, rollout_poll_s=1)
               for n in names]
    feeder = Feeder(rclient, line, frame_jpegs)
    try:
        wait_ready(rclient, *workers, names=names)
        feeder.start()
        wait_for(lambda: len(results(rclient, line)) >= 60, 60, "results before", workers)
        ro = reg.deploy(line, new, by="test", why="under load")
        wait_for(lambda: _applied(rclient, names, line, ro.revision), 60, "swap", workers)
        n = len(results(rclient, line))
        wait_for(lambda: len(results(rclient, line)) >= n + 60, 60, "results after", workers)
        feeder.halt.set()
        feeder.join()
        wait_for(lambda: len(results(rclient, line)) >= len(feeder.ids), 60, "all", workers)
        time.sleep(0.5)
        res = results(rclient, line)
        counts = Counter(r.frame_id for r in res)
        assert set(counts) == set(feeder.ids) and max(counts.values()) == 1
        for name in names:
            seq = [r.model_version for r in res if r.worker == name]
            changes = sum(a != b for a, b in itertools.pairwise(seq))
            assert seq[0] == old and seq[-1] == new and changes == 1, (name, Counter(seq))
        for name in names:
            assert _beat(rclient, name)["models"] == [new]  # the old version was released
    finally:
        feeder.halt.set()
        for w in workers:
            w.stop()


def test_canary_by_cameras_routes_exactly_them_and_rollback_restores(
        redis_url, line, rclient, registry, served_model, alarming_model, frame_jpegs, tmp_path):
    reg, _ = registry
    old, new = _register(registry, served_model), _register(registry, alarming_model)
    reg.deploy(line, old, by="test")
    ro = reg.deploy(line, new, mode="canary", cameras=["cam-c"], by="test")
    w = start_worker(redis_url, line, None, "w-canary", tmp_path, rollout_poll_s=1)
    try:
        wait_ready(rclient, w, names=("w-canary",))
        wait_for(lambda: _applied(rclient, ["w-canary"], line, ro.revision), 30, "canary", (w,))
        push_images(rclient, line, "cam-c", frame_jpegs[:6])
        push_images(rclient, line, "cam-p", frame_jpegs[:6])
        wait_for(lambda: len(results(rclient, line)) >= 12, 60, "results", (w,))
        by_cam = {(r.camera, r.model_version) for r in results(rclient, line)}
        assert by_cam == {("cam-c", new), ("cam-p", old)}

        reg.promote(line, by="test")
        ro = reg.rollback(line, by="test", why="night shift complained")
        assert ro.production == old
        wait_for(lambda: _applied(rclient, ["w-canary"], line, ro.revision), 30, "back", (w,))
        before = len(results(rclient, line))
        push_images(rclient, line, "cam-c", frame_jpegs[:4])
        wait_for(lambda: len(results(rclient, line)) >= before + 4, 60, "after", (w,))
        assert {r.model_version for r in results(rclient, line)[before:]} == {old}
        actions = [h["action"] for h in reg.history(line)][:3]
        assert actions == ["rollback", "promote", "deploy_canary"]
    finally:
        w.stop()


def _store_unchecked(reg: Registry, data: bytes, vid: str) -> None:
    """Put an artifact into the registry the way another rlr release might have."""
    reg._store(vid, data)
    version = ModelVersion(id=vid, sha256="0" * 64, size_bytes=len(data), created_at=time.time(),
                           created_by="test", source_job=None, note="", class_names=[],
                           preset=None, image_size=None, thresholds={}, metrics={},
                           blob_sha256=hashlib.sha256(data).hexdigest())
    reg.r.hset(keys.MODELS, vid, json.dumps(version.to_json()))


def test_corrupted_and_incompatible_versions_are_refused_while_the_old_one_serves(
        redis_url, line, rclient, registry, served_model, alarming_model, frame_jpegs,
        tmp_path):
    reg, made = registry
    good = _register(registry, served_model)
    reg.deploy(line, good, by="test")
    # a version whose stored bytes were damaged after registration
    broken = _register(registry, alarming_model)
    rclient.hset(keys.artifact(broken), "0", b"garbage" * 100)
    # a version written by a newer release (manifest schema 99): this worker cannot read it
    data = served_model.read_bytes()
    tensors = safetensors.torch.load(data)
    header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])
    manifest = json.loads(header["__metadata__"]["rlr_manifest"])
    future = _encode(tensors, {**manifest, "schema_version": 99})[0]
    _store_unchecked(reg, future, "m-ffff00000001")
    made.append("m-ffff00000001")
    w = start_worker(redis_url, line, None, "w-refuse", tmp_path, rollout_poll_s=1)
    try:
        wait_ready(rclient, w, names=("w-refuse",))
        for bad in (broken, "m-ffff00000001"):
            reg.deploy(line, bad, by="test")
            wait_for(lambda bad=bad: bad in _beat(rclient, "w-refuse").get("model_errors", {}),
                     30, f"{bad} refused", (w,))
            before = len(results(rclient, line))
            push_images(rclient, line, "cam-x", frame_jpegs[:4])
            wait_for(lambda before=before: len(results(rclient, line)) >= before + 4, 60,
                     "results", (w,))
            assert {r.model_version for r in results(rclient, line)[before:]} == {good}
        errors = _beat(rclient, "w-refuse")["model_errors"]
        assert "sha256" in errors[broken] and "schema" in errors["m-ffff00000001"]
        assert _beat(rclient, "w-refuse")["status"] == "ready"
    finally:
        reg.rollback(line, by="test")
        w.stop()
