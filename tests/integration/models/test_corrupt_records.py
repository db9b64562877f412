"""Damaged records in Redis, as a clumsy plant or an attacker leaves them: a rollout record
with a field of the wrong type, a `rlr:models` entry that is not JSON or not a version. Every
reader shows the damage (CORRUPT and the reason) and goes on: `rlrctl status`, `rlrctl
models` and the console's Models page. A private Redis server: `rlr:models` is global."""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner
from starlette.testclient import TestClient

from daemon.cli import main
from daemon.cli.settings import load_settings
from daemon.console.app import create_app
from daemon.line.embedded import EmbeddedRedis
from daemon.models.registry import Registry
from daemon.wire import keys

BY = "tester@ci"
LINE = "corrupt1"


@pytest.fixture(scope="module")
def server():
    with EmbeddedRedis(port=0, aof=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """An untrained tiny model: the registry reads its manifest, nothing scores with it."""
    from rlr.artifact import save_artifact
    from rlr.config import preset
    from rlr.model import create_model

    path = tmp_path_factory.mktemp("corrupt") / "tiny.rlr"
    save_artifact(path, create_model(preset("tiny"), load_backbone_weights=False), ["tile"])
    return path


@pytest.fixture
def plant(server, artifact):
    """A registry with one version deployed on LINE, as `make demo` would leave it."""
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    reg = Registry(client)
    vid = reg.register_file(artifact, BY).id
    reg.deploy(LINE, vid, by=BY)
    yield client, vid
    client.close()


def _cli(server, *args: str):
    res = CliRunner().invoke(main, [*args, "--redis-url", server.url])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output
    return res


def _models_page(server) -> str:
    app = create_app(load_settings(redis_url=server.url, lines=LINE, console_token="t0k"),
                     "127.0.0.1")
    with TestClient(app, base_url="http://127.0.0.1") as web:
        r = web.get("/models")
    assert r.status_code == 200, r.text[-500:]
    return r.text


@pytest.mark.parametrize("field, value, why", [
    ("canary_percent", "abc", 'canary_percent: "abc" is not a finite number'),
    ("updated_at", "yesterday", 'updated_at: "yesterday" is not a finite number'),
    ("canary_cameras", {"cam1": 1}, "canary_cameras: "),
    ("revision", "seven", 'revision: "seven" is not an integer')])
def test_a_rollout_record_with_a_wrong_field_is_shown_corrupt(server, plant, field, value, why):
    client, _ = plant
    record = json.loads(client.hget(keys.alias(LINE), "rollout"))
    client.hset(keys.alias(LINE), "rollout", json.dumps({**record, field: value}))
    res = _cli(server, "status", "--line", LINE)
    assert res.exit_code == 0, res.output
    assert "rollout record CORRUPT" in res.output and why in res.output
    res = _cli(server, "status", "--line", LINE, "--json")
    assert why in json.loads(res.output)["lines"][0]["rollout"]["corrupt"]
    assert _cli(server, "models").exit_code == 0
    page = _models_page(server)
    assert "rollout record unreadable" in page and field in page
    # the worker's view: nothing routed by a record it cannot trust (it keeps what it has)
    assert Registry(client).rollout(LINE).route("cam1") is None


@pytest.mark.parametrize("entry, why", [
    (b"not json{", "Expecting value"), (b"[1, 2]", "a JSON list"),
    (json.dumps({"id": "m-aaaaaaaaaaaa", "created_at": "yesterday"}).encode(),
     'created_at: "yesterday" is not a finite number')])
def test_a_corrupt_model_entry_is_a_corrupt_row_and_the_rest_still_lists(server, plant, entry,
                                                                        why):
    client, vid = plant
    client.hset(keys.MODELS, "m-aaaaaaaaaaaa", entry)
    res = _cli(server, "models")
    assert res.exit_code == 0, res.output
    rows = {ln.split()[0]: ln for ln in res.output.splitlines()[1:]}
    assert "CORRUPT" in rows["m-aaaaaaaaaaaa"] and why in rows["m-aaaaaaaaaaaa"]
    assert "CORRUPT" not in rows[vid] and f"{LINE}:production" in rows[vid]
    listed = [json.loads(ln) for ln in _cli(server, "models", "--json").output.splitlines()]
    assert {v["id"]: bool(v.get("corrupt")) for v in listed} == {vid: False,
                                                                 "m-aaaaaaaaaaaa": True}
    assert _cli(server, "status").exit_code == 0
    assert vid in _models_page(server)
    shown = _cli(server, "models", "show", "m-aaaaaaaaaaaa")
    assert shown.exit_code == 0 and "CORRUPT" in shown.output
    refused = _cli(server, "deploy", "m-aaaaaaaaaaaa", "--line", LINE)
    assert refused.exit_code == 2 and "is corrupt" in refused.output
    assert _cli(server, "models", "delete", "m-aaaaaaaaaaaa", "--yes").exit_code == 0
    assert client.hget(keys.MODELS, "m-aaaaaaaaaaaa") is None


def test_a_corrupt_record_of_a_registered_version_is_repaired_by_registering_again(
        server, plant, artifact):
    client, vid = plant
    client.hset(keys.MODELS, vid, b'{"id": 5}')
    assert "CORRUPT" in _cli(server, "models").output
    res = _cli(server, "models", "register", str(artifact))
    assert res.exit_code == 0 and f"registered {vid}" in res.output
    assert Registry(client).get(vid).corrupt is None
