"""Least privilege with Redis ACL users (deploy/redis/users.acl).

The rules of deploy/redis/users.acl, with test passwords in place of the `>CHANGE-ME-<role>`
placeholders, are loaded into a private Redis 7 (never the shared one on 6379). The real rlr
code paths then run as each user: the producer's XADD, a real `rlrctl worker` process serving a
line from the registry, the alert bridge, a trainer running a job, `rlrctl` operator commands.
Each must work without a single ACL denial (Redis's ACL LOG is checked), and each user is
refused what its role does not need: changing rollouts, deleting or trimming streams, forging
frames, results or alerts, server administration.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import re
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner
from redis.backoff import NoBackoff
from redis.retry import Retry

from daemon.cli import main
from daemon.cli.settings import load_settings
from daemon.errors import DeliveryError
from daemon.jobs import queue as jobs
from daemon.line import embedded
from daemon.line.bridges import plcwrites
from daemon.line.bridges.alertfeed import AlertFeed
from daemon.line.embedded import EmbeddedRedis
from daemon.line.part_ids import KeyWatch, TriggerReader, announce
from daemon.line.producer import Producer, push_images
from daemon.models.registry import Registry
from daemon.recipes.recipe import parse
from daemon.recipes.store import RecipeStore
from daemon.wire import keys
from daemon.wire.clients import connect
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, encode_frame
from tests.integration.procs import ROOT, start_worker, wait_for, wait_ready

ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"
USERS = ("default", "rlr-admin", "rlr-producer", "rlr-worker", "rlr-bridge", "rlr-modbus",
         "rlr-opcua", "rlr-sparkplug", "rlr-trainer", "rlr-operator", "rlr-keda", "rlr-console",
         "rlr-recorder")
PLACEHOLDER = re.compile(r">CHANGE-ME-([A-Za-z0-9_-]+)")
# redis-py sends CLIENT SETINFO on connect and ignores a refusal; Redis >= 7.2 logs it
TOLERATED = {("command", "client|setinfo")}


# ----------------------------------------------------------------------------- the server


def _server_version(exe: str) -> tuple[int, ...]:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    return tuple(int(x) for x in found.groups()) if found else (0,)


def redis7_server() -> str | None:
    """A redis-server >= 7.0 (selectors and %R~/%W~ key permissions need it), or None."""
    candidates = [shutil.which("redis-server")]
    with contextlib.suppress(Exception):
        candidates.append(embedded.server_executable())
    for exe in candidates:
        if exe and Path(exe).is_file() and _server_version(exe) >= (7, 0):
            return exe
    return None


def acl_lines(passwords: dict[str, str]) -> list[str]:
    """The `user ...` lines of users.acl with each `>CHANGE-ME-<role>` replaced."""
    out = []
    for raw in ACL_FILE.read_text().splitlines():
        if raw.strip():
            out.append(PLACEHOLDER.sub(lambda m: ">" + passwords[m.group(1)], raw.strip()))
    return out


@dataclass
class AclRedis:
    server: EmbeddedRedis
    passwords: dict[str, str]  # role (user name without "rlr-") -> password

    def url(self, user: str) -> str:
        return (f"redis://{user}:{self.passwords[user.removeprefix('rlr-')]}"
                f"@127.0.0.1:{self.server.port}/0")

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user))

    @functools.cached_property
    def admin(self) -> redis.Redis:
        return self.client("rlr-admin")

    def reset_log(self) -> None:
        self.admin.execute_command("ACL", "LOG", "RESET")

    def denials(self, user: str) -> list[tuple[str, str, str]]:
        """(reason, context, object) of every ACL denial of `user` since `reset_log()`."""
        out = []
        for e in self.admin.acl_log(count=128):
            e = {k: v.decode() if isinstance(v, bytes) else v for k, v in e.items()}
            if e["username"] == user and (e["reason"], e["object"]) not in TOLERATED:
                out.append((e["reason"], e["context"], e["object"]))
        return out


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory):
    exe = redis7_server()
    if exe is None:
        pytest.skip("needs redis-server >= 7.0 on PATH (Debian/Ubuntu: apt-get install "
                    "redis-server); the ACL rules use selectors and %R~/%W~ key permissions")
    passwords = {u.removeprefix("rlr-"): secrets.token_hex(12) for u in USERS[1:]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embedded, "server_executable", lambda: exe)
        server = EmbeddedRedis(tmp_path_factory.mktemp("acl") / "redis", port=0).start()
    try:
        # Until the file's `user default off` line (applied last), the default user loads it.
        boot = redis.Redis.from_url(server.url)
        for line in sorted(acl_lines(passwords), key=lambda ln: ln.split()[1] == "default"):
            boot.execute_command("ACL", "SETUSER", *line.split()[1:])
        boot.close()
        acl = AclRedis(server, passwords)
        acl.admin.ping()
        yield acl
    finally:
        server.stop()


def _line() -> str:
    return f"acl{uuid.uuid4().hex[:8]}"


def assert_denied(client: redis.Redis, *commands: tuple) -> None:
    """Every command is refused with NOPERM (any other outcome is reported)."""
    wrong = []
    for cmd in commands:
        try:
            reply = client.execute_command(*cmd)
        except redis.exceptions.NoPermissionError:
            continue
        except redis.ResponseError as exc:
            if "NOPERM" in str(exc) or "can't access" in str(exc):  # refused inside a script
                continue
            wrong.append(f"{' '.join(map(str, cmd))} -> ran, error {exc}")
        else:
            wrong.append(f"{' '.join(map(str, cmd))} -> ran, replied {reply!r}")
    assert not wrong, "not refused:\n" + "\n".join(wrong)


def _denied_everywhere(line: str) -> list[tuple]:
    """Commands no rlr service user may run: data loss, server administration."""
    return [("DEL", keys.frames(line)), ("UNLINK", keys.results(line)),
            ("XTRIM", keys.frames(line), "MAXLEN", "0"), ("XDEL", keys.frames(line), "1-0"),
            ("XGROUP", "DESTROY", keys.frames(line), "rlr-workers"),
            ("DEL", keys.MODELS), ("DEL", keys.alias(line)), ("FLUSHALL",), ("FLUSHDB",),
            ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("ACL", "LIST"),
            ("EVAL", "return 1", "0"), ("SET", "unrelated", "1"), ("GET", "unrelated")]


def _canonical(rules: list) -> list:
    """ACL LIST output without its arbitrary order of commands inside a rule."""
    out = []
    for rule in rules:
        rule = rule.decode() if isinstance(rule, bytes) else rule
        selectors = sorted(tuple(sorted(s.split())) for s in re.findall(r"\(([^)]*)\)", rule))
        out.append((sorted(re.sub(r"\([^)]*\)", " ", rule).split()), selectors))
    return sorted(out)


def _cli(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.output


# ----------------------------------------------------------------------------- the file


def test_acl_file_is_a_redis_aclfile_with_placeholder_passwords(acl_redis, tmp_path):
    lines = [ln for ln in ACL_FILE.read_text().splitlines() if ln.strip()]
    # an aclfile allows nothing but `user` lines (no comments): deploy/redis/README.md explains
    assert all(ln.startswith("user ") for ln in lines)
    assert [ln.split()[1] for ln in lines] == list(USERS)
    for ln in lines:
        name = ln.split()[1]
        placeholders = PLACEHOLDER.findall(ln)
        if name == "default":
            assert " off " in ln and not placeholders and ">" not in ln and "nopass" not in ln
        else:
            assert placeholders == [name.removeprefix("rlr-")], ln  # no real password here
            assert "#" not in ln and " on " in ln

    # The same rules loaded the way an operator does (`aclfile` in redis.conf) are the ones
    # the tests below run under.
    exe = redis7_server()
    aclfile = tmp_path / "users.acl"
    aclfile.write_text("\n".join(acl_lines(acl_redis.passwords)) + "\n")
    sock = tmp_path / "r.sock"
    proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(sock), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path), "--aclfile",
                             str(aclfile)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():  # the server refuses to start on a bad aclfile
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "redis-server with the aclfile did not start"
            time.sleep(0.02)
        admin = redis.Redis(unix_socket_path=str(sock), username="rlr-admin",
                            password=acl_redis.passwords["admin"])
        loaded = admin.acl_list()
        assert _canonical(loaded) == _canonical(acl_redis.admin.acl_list())
        with pytest.raises(redis.AuthenticationError):  # `default off`: no anonymous access
            redis.Redis(unix_socket_path=str(sock), retry=Retry(NoBackoff(), 0)).ping()
    finally:
        proc.terminate()
        proc.wait(10)


# ----------------------------------------------------------------------------- producer


def test_producer_can_add_frames_and_nothing_else(acl_redis, frame_jpegs):
    line, admin = _line(), acl_redis.admin
    producer = acl_redis.client("rlr-producer")
    acl_redis.reset_log()
    push_images(producer, line, "cam1", frame_jpegs[:3])
    assert Producer(producer, line, "cam2", fps=None).send(
        np.zeros((32, 32, 3), np.uint8), time.time())
    assert admin.xlen(keys.frames(line)) == 4
    assert acl_redis.denials("rlr-producer") == []

    frames = keys.frames(line)
    assert_denied(
        producer,
        ("XRANGE", frames, "-", "+"), ("XREAD", "STREAMS", frames, "0"), ("XLEN", frames),
        ("XGROUP", "CREATE", frames, "spy", "0"),
        ("XREADGROUP", "GROUP", "rlr-workers", "spy", "STREAMS", frames, ">"),
        ("XADD", keys.results(line), "*", "f", "1"), ("XADD", keys.alerts(line), "*", "f", "1"),
        ("XADD", keys.dlq(line), "*", "f", "1"), ("XADD", "rlr:other", "*", "f", "1"),
        ("HSET", keys.alias(line), "production", "m-000000000000"),
        ("HGET", keys.MODELS, "x"), ("SET", keys.worker("fake"), "{}"),
        ("PUBLISH", "rlr:rollout", line), *_denied_everywhere(line))
    assert admin.xlen(frames) == 4  # nothing was removed
    # the ACL LOG that the "no denials" checks read does record refusals
    assert ("command", "toplevel", "flushall") in acl_redis.denials("rlr-producer")


def test_producer_reads_the_part_ids_the_plc_announces_and_cannot_forge_them(acl_redis):
    line, admin = _line(), acl_redis.admin
    producer = acl_redis.client("rlr-producer")
    admin.xadd(keys.triggers(line), {"part_id": "OLD", "ts": "1", "via": "cli"})
    reader = TriggerReader(producer, line)  # reads the newest entry id at start
    announce(admin, line, "P1", via="modbus")
    acl_redis.reset_log()
    assert reader.next_id(lambda: False) == "P1"
    assert KeyWatch(producer, line).next_id(lambda: False) == "P1"
    assert acl_redis.denials("rlr-producer") == []
    assert_denied(producer, ("XADD", keys.triggers(line), "*", "part_id", "X"),
                  ("SET", keys.next_part(line), "X"), ("DEL", keys.triggers(line)),
                  ("XTRIM", keys.triggers(line), "MAXLEN", "0"))


def test_keda_user_reads_stream_metadata_only(acl_redis, frame_jpegs):
    line, admin = _line(), acl_redis.admin
    push_images(admin, line, "cam1", frame_jpegs[:2])
    admin.xgroup_create(keys.frames(line), "rlr-workers", id="0")
    keda = acl_redis.client("rlr-keda")
    acl_redis.reset_log()
    assert keda.xpending(keys.frames(line), "rlr-workers")["pending"] == 0
    assert keda.xinfo_groups(keys.frames(line))[0]["name"] == b"rlr-workers"
    assert acl_redis.denials("rlr-keda") == []
    frames = keys.frames(line)
    assert_denied(keda, ("XRANGE", frames, "-", "+"), ("XADD", frames, "*", "f", "1"),
                  ("XREADGROUP", "GROUP", "rlr-workers", "k", "STREAMS", frames, ">"),
                  ("HGET", keys.MODELS, "x"), *_denied_everywhere(line))


# ----------------------------------------------------------------------------- worker


@pytest.mark.slow
def test_worker_serves_a_deployed_model_with_least_privilege(
        acl_redis, alarming_model, served_model, frame_jpegs, tmp_path):
    line, admin, name = _line(), acl_redis.admin, f"w-acl-{uuid.uuid4().hex[:6]}"
    operator_url, worker_url = acl_redis.url("rlr-operator"), acl_redis.url("rlr-worker")
    acl_redis.reset_log()
    # the operator rolls out: production (every frame alarms) and a shadow, from .rlr files
    _cli("deploy", str(alarming_model), "--line", line, "--why", "acl test",
         "--redis-url", operator_url)
    _cli("deploy", str(served_model), "--line", line, "--shadow", "--redis-url", operator_url)
    revision = Registry(admin).rollout(line).revision
    assert revision == 2

    producer = acl_redis.client("rlr-producer")
    push_images(producer, line, "cam1", frame_jpegs[:6])
    producer.xadd(keys.frames(line), {"garbage": "1"})  # dead-lettered as malformed
    for view in ("top", "side"):  # a part of two views: joined, decided, emitted
        producer.xadd(keys.frames(line), encode_frame(
            "cam2", f"SN-1-{view}", time.time(), frame_jpegs[0], "jpeg", part="SN-1",
            view=view))
    producer.xadd(keys.frames(line), encode_frame(  # never completed: the sweep decides it
        "cam2", "SN-2-top", time.time(), frame_jpegs[0], "jpeg", part="SN-2", view="top"))

    # the line's first recipe comes from RLR_RECIPE, activated by the worker at start
    recipe = f"acl-{line}"
    cls = Registry(admin).get(Registry(admin).rollout(line).production).class_names[0]
    RecipeStore(admin).add(parse({"name": recipe, "product": "P-ACL", "class": cls,
                                  "deadline_ms": 1000, "views": [{"name": "top"},
                                                                 {"name": "side"}]}), by="test")

    # registry mode: no RLR_MODEL, the worker fetches the line's versions as rlr-worker
    w = start_worker(worker_url, line, None, name, tmp_path, recipe=recipe)
    try:
        wait_ready(admin, w, names=(name,))
        wait_for(lambda: admin.xlen(keys.results(line)) == 9 and
                 admin.xlen(keys.shadow(line)) == 9 and admin.xlen(keys.dlq(line)) == 1 and
                 admin.xlen(keys.parts(line)) == 2,
                 120, "results, shadow results, the dead letter and the parts", (w,))
        wait_for(lambda: admin.xlen(keys.alerts(line)) >= 1, 30, "an alert", (w,))
        beat = json.loads(admin.get(keys.worker(name)))
        assert beat["status"] == "ready" and beat["rollouts"] == {line: revision}
        assert sorted(beat["models"]) == sorted(Registry(admin).rollout(line).versions())
        assert beat["model_errors"] == {}
        assert int(admin.hget(keys.stats(line), "dead_lettered")) == 1
        assert RecipeStore(admin).active(line).via == "env"
        assert {PartVerdict.from_fields(f).recipe for _, f in admin.xrange(keys.parts(line))} \
            == {f"{recipe}@1"}
        # the health probe of a worker's pod / unit runs with the worker's credentials
        assert "healthy" in _cli("check", "--worker", name, "--line", line,
                                 "--redis-url", worker_url)
    finally:
        rc = w.stop(signal.SIGTERM)
    assert rc == 0, w.log_path.read_text()[-3000:]
    assert admin.get(keys.worker(name)) is None  # the heartbeat was deleted on the way out
    assert admin.xpending(keys.frames(line), "rlr-workers")["pending"] == 0
    assert acl_redis.denials("rlr-worker") == []
    assert acl_redis.denials("rlr-operator") == []
    assert acl_redis.denials("rlr-producer") == []

    worker = acl_redis.client("rlr-worker")
    frames, alias = keys.frames(line), keys.alias(line)
    vid = Registry(admin).rollout(line).production
    assert_denied(
        worker,
        ("HSET", alias, "production", "m-000000000000"), ("HDEL", alias, "shadow"),
        ("HINCRBY", alias, "revision", "1"), ("SET", alias, "x"),
        ("RENAME", alias, "rlr:alias:{other}"), ("XADD", keys.rollouts(line), "*", "f", "1"),
        ("PUBLISH", "rlr:rollout", line), ("HSET", keys.MODELS, vid, "{}"),
        ("HDEL", keys.MODELS, vid), ("DEL", keys.artifact(vid)),
        ("HSET", keys.artifact(vid), "0", "evil"),
        ("XADD", frames, "*", "f", "1"), ("XGROUP", "SETID", frames, "rlr-workers", "0"),
        ("XRANGE", frames, "-", "+"),
        ("DEL", keys.results(line)), ("XTRIM", keys.alerts(line), "MAXLEN", "0"),
        ("DEL", keys.stats(line)), ("SET", keys.job("j1"), "x"), *_denied_everywhere(line))
    # Redis 7 checks every command inside a script against the caller's rules too
    with pytest.raises(redis.ResponseError, match=r"can't access|NOPERM"):
        worker.register_script("return redis.call('DEL', KEYS[1])")(keys=[frames])
    with pytest.raises(redis.exceptions.NoPermissionError):
        Registry(worker).deploy(line, Registry(admin).rollout(line).shadow, by="worker")
    assert Registry(admin).rollout(line).revision == revision
    assert admin.xlen(frames) == 10  # 6 frames, the garbage entry, 3 views of parts
    assert ("key", "lua", frames) in acl_redis.denials("rlr-worker")


# ----------------------------------------------------------------------------- bridge


class _Sink:
    kind = "webhook"

    def __init__(self, reject: set[str]) -> None:
        self.reject, self.got = reject, []

    def deliver(self, alert: Alert) -> None:
        if alert.alert_id in self.reject:
            raise DeliveryError("rejected", "HTTP 400", permanent=True)
        self.got.append(alert.alert_id)

    def close(self) -> None:
        pass


def test_bridge_reads_alerts_and_writes_only_dead_letters(acl_redis):
    line, admin = _line(), acl_redis.admin
    alerts = [Alert(f"{line}-a{i}", line, "cam1", time.time(), "3/5", ["f1", "f2", "f3"],
                    [0.7, 0.9, 0.8], ["1-0", "2-0", "3-0"], "m-1", 0.6, "tile")
              for i in range(3)]
    for a in alerts:
        admin.xadd(keys.alerts(line), a.to_fields())
    acl_redis.reset_log()
    settings = load_settings(redis_url=acl_redis.url("rlr-bridge"), lines=[line])
    client = connect(settings)
    sink = _Sink({alerts[1].alert_id})
    assert AlertFeed(client, settings, sink).run_until_idle(10) == 3
    assert sink.got == [alerts[0].alert_id, alerts[2].alert_id]
    assert admin.xlen(keys.dlq(line)) == 1  # XADD + XACK in MULTI/EXEC
    assert admin.xpending(keys.alerts(line), "rlr-bridge-webhook")["pending"] == 0
    assert acl_redis.denials("rlr-bridge") == []

    assert_denied(
        client,
        ("XADD", keys.alerts(line), "*", "f", "1"), ("XADD", keys.results(line), "*", "f", "1"),
        ("XADD", keys.frames(line), "*", "f", "1"), ("XRANGE", keys.frames(line), "-", "+"),
        ("XRANGE", keys.results(line), "-", "+"), ("XRANGE", keys.dlq(line), "-", "+"),
        ("DEL", keys.alerts(line)), ("XTRIM", keys.alerts(line), "MAXLEN", "0"),
        ("XGROUP", "DESTROY", keys.alerts(line), "rlr-bridge-webhook"),
        ("HSET", keys.alias(line), "production", "x"), ("HGET", keys.MODELS, "x"),
        *_denied_everywhere(line))
    assert admin.xlen(keys.alerts(line)) == 3


# ----------------------------------------------------------------------------- PLC bridges


class _Listener:
    def __init__(self) -> None:
        self.results, self.alerts, self.healths, self.parts = [], [], [], []

    def result(self, cam, fresh) -> None:
        self.results.append(cam.camera)

    def alert(self, cam, alert) -> None:
        self.alerts.append(alert.alert_id)

    def cleared(self, cam, ids) -> None:
        pass

    def health(self, cam) -> None:
        self.healths.append(cam.health)

    def part(self, state, fresh) -> None:
        self.parts.append(state.last.part_id)


def _plc_switches_recipes(admin, sync, line: str, kind: str) -> None:
    from daemon.recipes.store import RecipeStore

    name = f"r{line}"
    RecipeStore(admin).add(parse({"name": name, "product": "P-1", "class": "washer",
                                  "views": [{"name": "top"}]}), by="test")
    try:
        assert plcwrites.select_recipe(sync, line, kind, name=name) == f"{name}@1"
        with pytest.raises(plcwrites.Refused):  # refusals are logged, as this user too
            plcwrites.select_recipe(sync, line, kind, name=f"{name}-missing")
        assert admin.xlen(keys.recipe_log(line)) == 2
    finally:
        admin.hdel(keys.RECIPES, name)
        admin.delete(keys.recipe_revisions(name))


@pytest.mark.parametrize("kind", ["modbus", "opcua", "sparkplug"])
def test_plc_bridges_read_the_line_state_and_write_only_acknowledgements(acl_redis, kind):
    import asyncio

    from daemon.line.bridges.linestate import LineFeed, discover_cameras
    from daemon.wire.clients import connect_async
    from daemon.wire.schema import HealthEvent, Result

    line, admin, user = _line(), acl_redis.admin, f"rlr-{kind}"
    admin.xadd(keys.results(line), Result("f1", "cam1", 0.9, True, 0.5, "m-1", time.time(),
                                          1.0, 2.0, 3.0, "w").to_fields())
    admin.xadd(keys.alerts(line), Alert(f"{line}-a1", line, "cam1", time.time(), "1/1", ["f1"],
                                        [0.9], ["1-0"], "m-1", 0.5).to_fields())
    admin.xadd(keys.health(line), HealthEvent(line, "cam1", "dark", "raised", time.time(),
                                              time.time()).to_fields())
    admin.hset(keys.camera_health(line), "cam1", json.dumps({"dark": {}}))
    admin.xadd(keys.parts(line), PartVerdict(line, "SN-1", "pass", "pass", time.time(),
                                             time.time(), 5.0, {}).to_fields())
    acl_redis.reset_log()
    settings = load_settings(redis_url=acl_redis.url(user), lines=[line], claim_idle_ms=100)
    sync = connect(settings)
    assert discover_cameras(sync, [line]) == [(line, "cam1")]
    listener = _Listener()

    async def run() -> None:
        client = connect_async(settings)
        feed = LineFeed(client, settings, kind, [line], listener,
                        hold_alerts=kind != "sparkplug")
        await feed.start()
        admin.xadd(keys.parts(line), PartVerdict(line, "SN-2", "reject", "reject", time.time(),
                                                 time.time(), 5.0, {}).to_fields())
        await feed.step(100)
        await feed.step(100)
        if kind != "sparkplug":
            assert await feed.acknowledge(line, "cam1", None, by=kind) == [f"{line}-a1"]
        await client.aclose()

    asyncio.run(run())
    if kind != "sparkplug":  # the PLC triggers the next part and switches recipes
        plcwrites.trigger(sync, line, "SN-3", kind)
        assert admin.get(keys.next_part(line)) == b"SN-3"
        if importlib.util.find_spec("daemon.recipes.store") is not None:
            _plc_switches_recipes(admin, sync, line, kind)
    assert listener.results == ["cam1"] and listener.alerts == [f"{line}-a1"]
    assert listener.healths == [("dark",)]
    assert listener.parts == ["SN-1", "SN-2"], "the last part at start, then each new one"
    assert admin.xpending(keys.parts(line), f"rlr-bridge-{kind}")["pending"] == 0
    assert admin.xpending(keys.alerts(line), f"rlr-bridge-{kind}")["pending"] == 0
    assert admin.hexists(keys.alert_acks(line), f"{line}-a1") == (kind != "sparkplug")
    assert acl_redis.denials(user) == []
    assert_denied(
        sync,
        ("XADD", keys.alerts(line), "*", "f", "1"), ("XADD", keys.results(line), "*", "f", "1"),
        ("XADD", keys.frames(line), "*", "f", "1"), ("XRANGE", keys.frames(line), "-", "+"),
        ("XADD", keys.dlq(line), "*", "f", "1"), ("HGET", keys.alert_acks(line), "x"),
        ("HSET", keys.camera_health(line), "cam1", "{}"), ("DEL", keys.alerts(line)),
        ("XGROUP", "DESTROY", keys.alerts(line), f"rlr-bridge-{kind}"),
        ("HSET", keys.alias(line), "production", "x"), ("XADD", keys.parts(line), "*", "f", "1"),
        ("GET", keys.next_part(line)), ("XRANGE", keys.triggers(line), "-", "+"),
        ("HSET", keys.RECIPES, "x", "{}"), ("XRANGE", keys.recipe_log(line), "-", "+"),
        *([("HSET", keys.alert_acks(line), "x", "1"), ("HGET", keys.MODELS, "x"),
           ("SET", keys.next_part(line), "x"), ("XADD", keys.triggers(line), "*", "f", "1")]
          if kind == "sparkplug" else []),
        *_denied_everywhere(line))


# ----------------------------------------------------------------------------- trainer


@pytest.mark.slow
def test_trainer_runs_a_job_registers_and_deploys_its_canary(
        acl_redis, tiny_artifact, synthetic_root, tmp_path):
    from daemon.jobs.trainer import Trainer

    line, admin = _line(), acl_redis.admin
    operator_url = acl_redis.url("rlr-operator")
    acl_redis.reset_log()
    _cli("deploy", str(tiny_artifact), "--line", line, "--redis-url", operator_url)
    res = CliRunner().invoke(main, [
        "train", "--submit", "--preset", "tiny", "--quiet", "--data", str(synthetic_root),
        "--epochs", "1", "--far", "0.1", "--deploy-line", line, "--canary-cameras", "cam1"],
        env={"RLR_REDIS_URL": operator_url})
    assert res.exit_code == 0, res.output
    job_id = res.stdout.strip()

    settings = load_settings(redis_url=acl_redis.url("rlr-trainer"), lines=[line],
                             job_timeout_s=30)
    trainer = Trainer(connect(settings), settings, tmp_path / "work", name="t-acl",
                      device="cpu")
    assert trainer.run_until_idle(max_jobs=1) == 1
    job = jobs.get_job(admin, job_id)
    assert job.state == "succeeded", job.error
    rollout = Registry(admin).rollout(line)
    assert rollout.canary == job.version and rollout.canary_cameras == ["cam1"]
    assert job.version in _cli("jobs", "show", job_id, "--redis-url", operator_url)
    assert "succeeded" in _cli("jobs", "list", "--redis-url", operator_url)
    assert acl_redis.denials("rlr-trainer") == []
    assert acl_redis.denials("rlr-operator") == []

    trainer_client = acl_redis.client("rlr-trainer")
    assert_denied(
        trainer_client,
        ("XADD", keys.frames(line), "*", "f", "1"), ("XRANGE", keys.frames(line), "-", "+"),
        ("XADD", keys.alerts(line), "*", "f", "1"), ("HDEL", keys.MODELS, job.version),
        ("HSET", keys.MODELS, job.version, "{}"), ("DEL", keys.artifact(job.version)),
        ("HSET", keys.artifact(job.version), "0", "evil"), ("DEL", keys.JOBS),
        ("SET", keys.worker("fake"), "{}"), *_denied_everywhere(line))


# ----------------------------------------------------------------------------- operator


def test_operator_changes_rollouts_and_reads_but_never_touches_the_data_path(
        acl_redis, served_model, alarming_model, tmp_path):
    line, admin = _line(), acl_redis.admin
    url = acl_redis.url("rlr-operator")
    acl_redis.reset_log()
    op = acl_redis.client("rlr-operator")
    reg = Registry(op)
    a = reg.register_file(served_model, created_by="ops").id
    b = reg.register_file(alarming_model, created_by="ops").id
    _cli("deploy", a, "--line", line, "--redis-url", url)
    _cli("deploy", b, "--line", line, "--canary", "--cameras", "cam1", "--redis-url", url)
    _cli("promote", "--line", line, "--redis-url", url)
    _cli("rollback", "--line", line, "--redis-url", url)
    assert Registry(admin).rollout(line).production == a
    admin.xadd(keys.alerts(line), {"v": "1"})  # something for the read-only commands to read
    status = json.loads(_cli("status", "--line", line, "--json", "--redis-url", url))
    assert json.dumps(status).count(a) >= 1
    assert a in _cli("models", "--redis-url", url)
    entry = _cli("trigger", "SN-1", "--line", line, "--redis-url", url).strip()
    assert admin.xrange(keys.triggers(line))[0][0].decode() == entry
    assert admin.get(keys.next_part(line)) == b"SN-1"
    recipe = tmp_path / "tile.toml"
    recipe.write_text('name = "tile-a"\nproduct = "T1"\nclass = "tile"\n'
                      '[[views]]\nname = "top"\n')
    _cli("recipe", "add", str(recipe), "--redis-url", url)
    assert "tile-a@1 active" in _cli("recipe", "activate", "tile-a", "--line", line,
                                     "--redis-url", url)
    assert "tile-a" in _cli("recipe", "history", "--line", line, "--redis-url", url)
    assert acl_redis.denials("rlr-operator") == []

    frames = keys.frames(line)
    admin.xgroup_create(frames, "rlr-workers", id="0", mkstream=True)
    assert_denied(
        op,
        ("XADD", frames, "*", "f", "1"),
        ("XREADGROUP", "GROUP", "rlr-workers", "ops", "STREAMS", frames, ">"),
        ("XACK", frames, "rlr-workers", "1-0"), ("XADD", keys.results(line), "*", "f", "1"),
        ("XADD", keys.alerts(line), "*", "f", "1"), ("SET", keys.worker("fake"), "{}"),
        ("HINCRBY", keys.stats(line), "skipped", "1"),
        *_denied_everywhere(line))
    assert Registry(admin).rollout(line).production == a


# ----------------------------------------------------------------------------- console


def test_console_reads_the_line_and_acts_with_least_privilege(
        acl_redis, served_model, alarming_model):
    from starlette.testclient import TestClient

    from daemon.console.app import create_app
    from daemon.recipes.recipe import parse
    from daemon.recipes.store import RecipeStore
    from daemon.wire.schema import Result

    line, admin = _line(), acl_redis.admin
    reg = Registry(admin)
    a = reg.register_file(served_model, created_by="ops").id
    b = reg.register_file(alarming_model, created_by="ops").id
    reg.deploy(line, a, by="ops")
    reg.deploy(line, b, mode="canary", cameras=["cam1"], by="ops")
    res = Result("f1", "cam1", 0.5, True, 0.1, b, time.time(), 1.0, 2.0, 3.0, "w1")
    admin.xadd(keys.results(line), res.to_fields())
    aid = admin.xadd(keys.alerts(line), Alert("", line, "cam1", time.time(), "1/1", ["f1"],
                                              [0.5], ["1-0"], b, 0.1).to_fields()).decode()
    admin.hset(keys.thumb(line, "cam1"), mapping={"frame_id": "f1", "ts": "1", "image": b"x"})
    acl_redis.reset_log()
    settings = load_settings(redis_url=acl_redis.url("rlr-console"), lines=line,
                             console_token="t0k")
    with TestClient(create_app(settings, "127.0.0.1"), base_url="http://127.0.0.1") as web:
        for path in ("/", "/models", "/workers", "/jobs", f"/api/alerts?line={line}"):
            assert web.get(path).status_code == 200, path
        wait_for(lambda: web.app.state.console["hub"].status["lines"], 10, "status read")
        wait_for(lambda: web.get(f"/thumb?line={line}&camera=cam1").status_code == 200, 10,
                 "the thumbnail read")
        act = {"x-rlr-token": "t0k"}
        assert web.post("/api/ack", json={"line": line, "alert_id": aid, "by": "ann"},
                        headers=act).status_code == 200
        assert web.post("/api/rollout", json={"line": line, "action": "promote", "by": "ann"},
                        headers=act).status_code == 200
        RecipeStore(admin).add(parse({"name": "tile-b", "product": "T1", "class": "tile",
                                      "views": [{"name": "top"}]}), "ops")
        assert web.post(f"/api/lines/{line}/recipe", json={"name": "tile-b", "by": "ann"},
                        headers=act).status_code == 200
        assert web.get(f"/api/lines/{line}/recipe").json()["active"]["label"] == "tile-b@1"
    assert Registry(admin).rollout(line).production == b
    assert acl_redis.denials("rlr-console") == []
    con = acl_redis.client("rlr-console")
    assert_denied(
        con, ("XADD", keys.frames(line), "*", "f", "1"),
        ("XADD", keys.results(line), "*", "f", "1"), ("XADD", keys.alerts(line), "*", "f", "1"),
        ("HSET", keys.MODELS, a, "{}"),
        ("HDEL", keys.MODELS, a), ("DEL", keys.artifact(a)),
        ("HSET", keys.thumb(line, "cam1"), "image", "evil"), ("SET", keys.worker("fake"), "{}"),
        ("HINCRBY", keys.stats(line), "skipped", "1"), *_denied_everywhere(line))


# ----------------------------------------------------------------------------- recorder


def test_recorder_writes_the_records_and_reads_frames_without_touching_the_line(
        acl_redis, tmp_path):
    from daemon.records.recorder import Recorder, presence_key
    from daemon.records.settings import RecordsSettings
    from daemon.records.store import Store
    from daemon.wire.schema import Result

    line, admin = _line(), acl_redis.admin
    for i in range(6):  # what the worker leaves: the frame, its seen key, its result
        entry = admin.xadd(keys.frames(line), encode_frame("cam1", f"f{i}", time.time(),
                                                           b"JPEG%d" % i, "jpeg")).decode()
        res = Result(f"f{i}", "cam1", 2.0, i % 2 == 0, 1.0, "v1", time.time(), 1.0, 2.0, 20.0,
                     "w1", None, b"PNG%d" % i if i % 2 == 0 else None)
        rid = admin.xadd(keys.results(line), res.to_fields()).decode()
        admin.set(keys.seen(line, "cam1", f"f{i}"), f"{rid} {entry}", ex=600)
    admin.xadd(keys.parts(line), {"v": "1", "part_id": "SN-1", "verdict": "pass",
                                 "ts": repr(time.time())})
    admin.xadd(keys.recipe_log(line), {"ts": repr(time.time()), "action": "activated",
                                       "name": "r1", "revision": "1", "by": "t", "via": "cli"})
    store = Store.open(url=f"sqlite:///{tmp_path / 'r.db'}")
    store.require_schema()
    acl_redis.reset_log()
    settings = load_settings(redis_url=acl_redis.url("rlr-recorder"), lines=[line])
    client = connect(settings)
    rec = Recorder(client, store, [line], RecordsSettings(
        records_consumer="acl-rec", records_dir=tmp_path, records_keep_pass=0))
    rec.run_until_idle()
    rec._publish_presence()
    assert (rec.stats.frames, rec.stats.parts, rec.stats.recipes, rec.stats.pictures) == \
        (6, 1, 1, 3)
    assert rec.stats.state == "ok" and admin.exists(presence_key("acl-rec"))
    assert acl_redis.denials("rlr-recorder") == []
    store.close()

    assert_denied(
        client,
        ("XADD", keys.results(line), "*", "f", "1"), ("XADD", keys.frames(line), "*", "f", "1"),
        ("XADD", keys.alerts(line), "*", "f", "1"), ("XADD", keys.parts(line), "*", "f", "1"),
        ("XADD", keys.recipe_log(line), "*", "f", "1"),
        ("XREADGROUP", "GROUP", "rlr-workers", "spy", "STREAMS", keys.frames(line), ">"),
        ("SET", keys.seen(line, "cam1", "f9"), "1"), ("DEL", keys.seen(line, "cam1", "f0")),
        ("DEL", keys.results(line)), ("XTRIM", keys.results(line), "MAXLEN", "0"),
        ("HSET", keys.alias(line), "production", "x"), ("HGET", keys.MODELS, "x"),
        *_denied_everywhere(line))
    assert admin.xlen(keys.results(line)) == 6
