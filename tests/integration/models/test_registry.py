"""Model registry and rollouts against a real Redis: storage, verification, rollout sequence,
notifications and the `rlrctl` commands."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import pytest
from click.testing import CliRunner

from daemon.cli import main
from daemon.models.registry import NOTIFY_CHANNEL, Registry, RegistryError
from daemon.wire import keys
from rlr.artifact import update_manifest_bytes

BY = "tester@ci"


@pytest.fixture
def registry(rclient, line):
    """A registry with small chunks; deletes the versions the test registered, after
    removing the test line's rollout (the registry itself is global)."""
    reg = Registry(rclient, chunk_bytes=256 * 1024)
    before = set(rclient.hkeys(keys.MODELS))
    yield reg
    rclient.delete(keys.alias(line), keys.rollouts(line))
    for vid in set(rclient.hkeys(keys.MODELS)) - before:
        with contextlib.suppress(RegistryError):
            reg.delete(vid.decode())


@pytest.fixture
def make_artifact(tiny_artifact):
    """Artifact bytes unique to this test (a metrics token), so parallel runs never share ids."""
    data = tiny_artifact.read_bytes()

    def make(**metrics) -> bytes:
        return update_manifest_bytes(data, metrics={"test": uuid.uuid4().hex, **metrics})[0]

    return make


def _artifact_keys(rclient) -> set[bytes]:
    return set(rclient.scan_iter(match="rlr:artifact:*", count=1000))


def test_register_fetch_round_trip_is_chunked_and_idempotent(registry, rclient, make_artifact):
    data = make_artifact(mean={"image_auroc": 0.91})
    v = registry.register(data, BY, source_job="job-1", note="first")
    assert v.id.startswith("m-") and len(v.id) == 14
    assert v.class_names == ["fabric", "tile", "washer"] and v.preset == "tiny"
    assert v.image_size == 64 and v.metrics["mean"]["image_auroc"] == 0.91
    assert v.size_bytes == len(data) and v.source_job == "job-1"
    n = int(rclient.hget(keys.artifact(v.id), "n"))
    assert n == -(-len(data) // (256 * 1024)) and n > 1
    assert registry.fetch(v.id) == data
    assert registry.get(v.id) == v and v.id in [x.id for x in registry.list()]

    again = registry.register(data, "someone@else", note="second")
    assert again == v  # same id, same record, nothing stored twice
    assert len([k for k in _artifact_keys(rclient) if v.id.encode() in k]) == 1


def test_fetch_detects_a_damaged_or_missing_chunk(registry, rclient, make_artifact):
    v = registry.register(make_artifact(), BY)
    key = keys.artifact(v.id)
    chunk = bytearray(rclient.hget(key, "1"))
    chunk[100] ^= 0xFF
    rclient.hset(key, "1", bytes(chunk))
    with pytest.raises(RegistryError, match="sha256"):
        registry.fetch(v.id)
    rclient.hdel(key, "1")
    with pytest.raises(RegistryError, match=r"lacks chunk\(s\) \[1\]"):
        registry.fetch(v.id)


def test_a_corrupted_or_truncated_artifact_is_refused_and_nothing_stored(
        registry, rclient, make_artifact, tmp_path):
    data = make_artifact()
    flipped = bytearray(data)
    flipped[-50] ^= 0xFF  # inside the tensor data: the manifest sha256 no longer matches
    models, artifacts = set(rclient.hkeys(keys.MODELS)), _artifact_keys(rclient)
    with pytest.raises(RegistryError, match="sha256 mismatch"):
        registry.register(bytes(flipped), BY)
    path = tmp_path / "truncated.rlr"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RegistryError, match="truncated"):
        registry.register_file(path, BY)
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register_file(tmp_path / "nope.rlr", BY)
    assert set(rclient.hkeys(keys.MODELS)) - models == set()
    assert _artifact_keys(rclient) - artifacts == set()


def test_deploy_canary_promote_rollback_sequence_with_history(registry, line, make_artifact):
    a = registry.register(make_artifact(), BY).id
    b = registry.register(make_artifact(), BY).id
    c = registry.register(make_artifact(), BY).id
    assert registry.rollout(line).revision == 0 and registry.rollout(line).production is None

    with pytest.raises(RegistryError, match="no production model"):
        registry.deploy(line, b, mode="canary", percent=10, by=BY)
    ro = registry.deploy(line, a, by=BY, why="first model")
    assert (ro.production, ro.previous, ro.revision) == (a, None, 1)
    with pytest.raises(RegistryError, match="already production"):
        registry.deploy(line, a, by=BY)

    ro = registry.deploy(line, b, mode="canary", cameras=["cam2", "cam1"], by=BY, why="try b")
    assert ro.canary == b and ro.canary_cameras == ["cam1", "cam2"]
    assert ro.route("cam1") == b and ro.route("cam9") == a
    ro = registry.deploy(line, c, mode="shadow", by=BY)
    assert ro.versions() == {a, b, c} and ro.revision == 3
    with pytest.raises(RegistryError, match="in use"):
        registry.delete(c)

    ro = registry.promote(line, by=BY, why="b is better")
    assert (ro.production, ro.previous, ro.canary, ro.canary_cameras) == (b, a, None, [])
    assert ro.shadow == c
    with pytest.raises(RegistryError, match="no canary"):
        registry.promote(line, by=BY)

    ro = registry.rollback(line, by=BY, why="b misses scratches")
    assert (ro.production, ro.previous) == (a, b)
    ro = registry.clear(line, "shadow", by=BY)
    assert ro.shadow is None and ro.revision == 6
    assert registry.rollout(line) == ro

    hist = registry.history(line)
    assert [h["action"] for h in hist] == ["clear_shadow", "rollback", "promote",
                                           "deploy_shadow", "deploy_canary", "deploy"]
    assert [h["version"] for h in hist] == [c, a, b, c, b, a]
    assert hist[1]["why"] == "b misses scratches" and hist[1]["by"] == BY
    assert hist[0]["rollout"] == ro.to_json() and hist[-1]["revision"] == 1
    assert all(h["ts"] <= time.time() for h in hist)

    registry.delete(c)  # no longer referenced
    with pytest.raises(RegistryError, match="unknown model version"):
        registry.get(c)


def test_deploy_of_an_unknown_version_is_refused(registry, rclient, line):
    with pytest.raises(RegistryError, match="unknown model version m-000000000000"):
        registry.deploy(line, "m-000000000000", by=BY)
    assert not rclient.exists(keys.alias(line), keys.rollouts(line))


def test_rollout_changes_are_announced(registry, rclient, line, make_artifact):
    v = registry.register(make_artifact(), BY)
    pubsub = rclient.pubsub()
    pubsub.subscribe(NOTIFY_CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    registry.deploy(line, v.id, by=BY)
    deadline, got = time.monotonic() + 5, []
    while time.monotonic() < deadline and line.encode() not in got:
        msg = pubsub.get_message(timeout=1)
        if msg and msg["type"] == "message":
            got.append(msg["data"])
    pubsub.close()
    assert line.encode() in got


def test_cli_models_deploy_status_rollback(registry, redis_url, line, make_artifact, tmp_path):
    env = {"RLR_REDIS_URL": redis_url}
    first, second = tmp_path / "first.rlr", tmp_path / "second.rlr"
    first.write_bytes(make_artifact())
    second.write_bytes(make_artifact(mean={"image_auroc": 0.875}))
    run = CliRunner().invoke

    res = run(main, ["deploy", str(first), "--line", line, "--why", "initial"], env=env)
    assert res.exit_code == 0, res.output
    a = res.output.split(" as ")[1].split()[0]
    res = run(main, ["deploy", str(second), "--line", line], env=env)
    assert res.exit_code == 0, res.output
    b = res.output.split(" as ")[1].split()[0]
    res = run(main, ["deploy", b, "--line", line, "--canary", "--percent", "10"], env=env)
    assert res.exit_code == 2 and "a canary must be another version" in res.output

    res = run(main, ["models"], env=env)
    assert res.exit_code == 0, res.output
    row = next(r for r in res.output.splitlines() if r.startswith(b))
    assert "0.8750" in row and f"{line}:production" in row and "tiny" in row
    res = run(main, ["models", "--json"], env=env)
    listed = {d["id"]: d for d in map(json.loads, res.output.splitlines())}
    assert listed[a]["created_by"] and listed[a]["lines"] == []
    res = run(main, ["models", "show", b[:8]], env=env)
    assert res.exit_code == 0 and f"{line}:production" in res.output and f"{line}:previous" \
        not in res.output

    res = run(main, ["status", "--line", line, "--json"], env=env)
    assert res.exit_code == 0, res.output
    (entry,) = json.loads(res.output)["lines"]
    assert entry["rollout"]["production"] == b and entry["rollout"]["previous"] == a
    assert entry["dead_letters"] == 0 and entry["workers"] == []
    assert [h["action"] for h in entry["history"]] == ["deploy", "deploy"]
    assert entry["history"][1]["why"] == "initial"

    res = run(main, ["rollback", "--line", line, "--why", "bad batch"], env=env)
    assert res.exit_code == 0, res.output
    assert f"rolled back to {a}" in res.output
    res = run(main, ["status", "--line", line], env=env)
    assert res.exit_code == 0 and f"production   {a}" in res.output and "bad batch" in res.output

    res = run(main, ["models", "delete", a, "--yes"], env=env)
    assert res.exit_code == 2 and "in use" in res.output
    res = run(main, ["deploy", "m-ffffffffffff", "--line", line], env=env)
    assert res.exit_code == 2 and "unknown model version" in res.output


@pytest.mark.parametrize("garbage", ["not json{", "[1, 2]", '{"revision": "seven"}'])
def test_a_corrupt_rollout_record_is_shown_and_repaired_by_the_cli(
        registry, rclient, redis_url, line, make_artifact, garbage):
    first = registry.register(make_artifact(), BY).id
    second = registry.register(make_artifact(), BY).id
    registry.deploy(line, first, by=BY)
    registry.deploy(line, second, by=BY)
    rclient.hset(keys.alias(line), "rollout", garbage)
    run = CliRunner().invoke
    ro = registry.rollout(line)
    assert ro.corrupt and ro.revision == 2 and ro.production is None

    res = run(main, ["status", "--line", line, "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    assert "rollout record CORRUPT" in res.output and f"rlrctl deploy MODEL --line {line}" \
        in res.output
    res = run(main, ["models", "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    # rollback repairs from the last readable state in the history: back to the first version
    res = run(main, ["rollback", "--line", line, "--why", "repair", "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    ro = registry.rollout(line)
    assert not ro.corrupt and (ro.production, ro.previous, ro.revision) == (first, second, 3)
    assert registry.history(line, 1)[0]["action"] == "rollback (repaired a corrupt record)"

    rclient.hset(keys.alias(line), "rollout", garbage)
    res = run(main, ["deploy", second, "--line", line, "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    ro = registry.rollout(line)
    assert (ro.production, ro.previous, ro.revision) == (second, first, 4)
