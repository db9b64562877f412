"""Alert bridges against a real Redis, a real Mosquitto and a real HTTP server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis
from click.testing import CliRunner

from daemon.cli import main
from daemon.cli.settings import load_settings
from daemon.errors import DeliveryError
from daemon.line.bridge import Bridge
from daemon.line.embedded import EmbeddedRedis
from daemon.line.sinks import WebhookSink
from daemon.wire import keys
from daemon.wire.clients import connect
from daemon.wire.schema import Alert, DeadLetter, HealthEvent
from tests.http_receiver import Receiver

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def _alert(line: str, i: int) -> Alert:
    return Alert(f"{line}-a{i}", line, f"cam{i % 2}", time.time(), "3/5",
                 [f"f{i}-{k}" for k in range(3)], [0.7, 0.9, 0.8 + i / 100],
                 ["1-0", "2-0", "3-0"], "v1", 0.6, "tile")


def _raise(rclient, line: str, n: int) -> list[Alert]:
    alerts = [_alert(line, i) for i in range(n)]
    for a in alerts:
        rclient.xadd(keys.alerts(line), a.to_fields())
    return alerts


def _bridge(redis_url: str, line: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "RLR_REDIS_URL": redis_url, "RLR_LOG_FORMAT": "json",
           "RLR_METRICS_PORT": "0"}
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "bridge", *args,
                             "--line", line], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    return proc.returncode, err


def _wait(cond, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"bridge exited early ({proc.returncode}): {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _pending(rclient, line: str, group: str) -> int:
    """Alerts the group read but did not ack yet; -1 before the bridge created the group."""
    try:
        return rclient.xpending(keys.alerts(line), group)["pending"]
    except redis.ResponseError:
        return -1


class _ListSink:
    kind = "test"

    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[Alert] = []
        self.fail_first = fail_first

    def deliver(self, alert: Alert) -> None:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise DeliveryError("flaky", "try again")
        self.got.append(alert)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- MQTT


@pytest.fixture
def mqtt_subscriber(line):
    try:
        socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=1).close()
    except OSError:
        pytest.skip(f"no MQTT broker at {MQTT_HOST}:{MQTT_PORT} (start mosquitto to run this)")
    import paho.mqtt.client as mqtt

    got: list[tuple[str, dict]] = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{line}")
    client.on_message = lambda c, u, msg: got.append((msg.topic, json.loads(msg.payload)))
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(f"rlr/{line}/#", qos=1)
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    assert subscribed.wait(5), "could not subscribe on the MQTT broker"
    yield got
    client.disconnect()
    client.loop_stop()


def test_mqtt_bridge_publishes_every_alert_once(redis_url, line, rclient, mqtt_subscriber):
    alerts = _raise(rclient, line, 3)  # raised before the bridge ever ran: still delivered
    proc = _bridge(redis_url, line, "mqtt", "--mqtt-url", f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
    try:
        _wait(lambda: len(mqtt_subscriber) >= 3, proc=proc)
        late = _alert(line, 3)
        rclient.xadd(keys.alerts(line), late.to_fields())
        _wait(lambda: len(mqtt_subscriber) >= 4, proc=proc)
        time.sleep(0.3)  # a duplicate would arrive now
    finally:
        rc, err = _stop(proc)
    assert rc == 0, err
    expected = {a.alert_id: a for a in [*alerts, late]}
    assert len(mqtt_subscriber) == 4
    for topic, payload in mqtt_subscriber:
        a = expected.pop(payload["alert_id"])
        assert topic == f"rlr/{line}/alerts/{a.camera}"
        assert payload == a.to_json()
    assert _pending(rclient, line, "rlr-bridge-mqtt") == 0
    events = [json.loads(ln)["event"] for ln in err.splitlines() if ln.startswith("{")]
    assert events.count("alert_delivered") == 4 and "bridge_stopped" in events


def _health(rclient, line: str) -> list[HealthEvent]:
    events = [HealthEvent(line, "cam0", "blur", "raised", time.time(), time.time() - 1,
                          {"ratio": 0.1, "frame_id": "f9"}, "w1"),
              HealthEvent(line, "cam0", "blur", "cleared", time.time(), time.time() - 1,
                          {"ratio": 0.9, "frame_id": "f19"}, "w1")]
    for e in events:
        rclient.xadd(keys.health(line), e.to_fields())
    return events


def test_mqtt_bridge_carries_camera_health_on_its_own_topic(redis_url, line, rclient,
                                                          mqtt_subscriber):
    events = _health(rclient, line)
    alert, = _raise(rclient, line, 1)
    proc = _bridge(redis_url, line, "mqtt", "--mqtt-url", f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
    try:
        _wait(lambda: len(mqtt_subscriber) >= 3, proc=proc)
        time.sleep(0.3)  # a duplicate would arrive now
    finally:
        rc, err = _stop(proc)
    assert rc == 0, err
    health = [(t, p) for t, p in mqtt_subscriber if p.get("type") == "camera_health"]
    assert health == [(f"rlr/{line}/health/cam0", e.to_json()) for e in events]
    assert [p["alert_id"] for t, p in mqtt_subscriber if "/alerts/" in t] == [alert.alert_id]
    assert rclient.xpending(keys.health(line), "rlr-bridge-mqtt")["pending"] == 0


# ----------------------------------------------------------------------------- webhook


def test_webhook_bridge_posts_camera_health_events(redis_url, line, rclient):
    events = _health(rclient, line)
    with Receiver([200, 200]) as rx:
        proc = _bridge(redis_url, line, "webhook", "--url", rx.url)
        try:
            _wait(lambda: len(rx.requests) >= 2, proc=proc)
            time.sleep(0.3)
        finally:
            rc, err = _stop(proc)
    assert rc == 0, err
    assert [json.loads(body) for _, body in rx.requests] == [e.to_json() for e in events]
    assert len({h["Idempotency-Key"] for h, _ in rx.requests}) == 2


def test_webhook_bridge_retries_server_errors(redis_url, line, rclient):
    alert, = _raise(rclient, line, 1)
    with Receiver([500, 500, 200]) as rx:
        proc = _bridge(redis_url, line, "webhook", "--url", rx.url)
        try:
            _wait(lambda: _pending(rclient, line, "rlr-bridge-webhook") == 0
                  and len(rx.requests) >= 3, proc=proc)
        finally:
            rc, err = _stop(proc)
    assert rc == 0, err
    assert len(rx.requests) == 3
    assert {h["Idempotency-Key"] for h, _ in rx.requests} == {alert.alert_id}
    assert json.loads(rx.requests[-1][1]) == alert.to_json()
    assert rclient.xlen(keys.dlq(line)) == 0


def test_webhook_rejection_is_dead_lettered_at_once(redis_url, line, rclient):
    alert, = _raise(rclient, line, 1)
    settings = load_settings(redis_url=redis_url, lines=[line])
    with Receiver([400], body=b"camera not configured") as rx:
        bridge = Bridge(rclient, settings, WebhookSink(rx.url, 2.0))
        assert bridge.run_until_idle(5) == 1
    assert len(rx.requests) == 1  # a 4xx is not retried
    (_, fields), = rclient.xrange(keys.dlq(line))
    letter = DeadLetter.from_fields(fields)
    assert letter.kind == "alert" and letter.reason == "rejected"
    assert "HTTP 400" in letter.detail and "camera not configured" in letter.detail
    assert letter.original["alert_id"] == alert.alert_id
    assert _pending(rclient, line, "rlr-bridge-webhook") == 0


def test_webhook_without_url_names_the_setting(monkeypatch, redis_url, line):
    monkeypatch.delenv("RLR_WEBHOOK_URL", raising=False)
    res = CliRunner().invoke(main, ["bridge", "webhook", "--line", line,
                                    "--redis-url", redis_url])
    assert res.exit_code == 2 and "RLR_WEBHOOK_URL" in res.output


# ----------------------------------------------------------------------------- the Bridge loop


def test_gives_up_after_max_attempts_into_the_dlq(redis_url, line, rclient):
    _raise(rclient, line, 1)
    settings = load_settings(redis_url=redis_url, lines=[line], bridge_max_attempts=3)
    sink = _ListSink(fail_first=10)
    bridge = Bridge(rclient, settings, sink, retry_first_s=0.01)
    bridge.run_until_idle(5)
    (_, fields), = rclient.xrange(keys.dlq(line))
    letter = DeadLetter.from_fields(fields)
    assert (letter.reason, letter.deliveries, letter.kind) == ("delivery_failed", 3, "alert")
    assert sink.fail_first == 7 and not sink.got


def test_takes_over_alerts_a_crashed_bridge_left_pending(redis_url, line, rclient):
    alert, = _raise(rclient, line, 1)
    settings = load_settings(redis_url=redis_url, lines=[line], claim_idle_ms=100)
    sink = _ListSink()
    bridge = Bridge(rclient, settings, sink)
    bridge.ensure_groups()
    # another bridge reads the alert and dies before delivering it
    rclient.xreadgroup(bridge.group, "crashed", {keys.alerts(line): ">"}, count=1)
    time.sleep(0.15)
    bridge.run_until_idle(5)
    assert [a.alert_id for a in sink.got] == [alert.alert_id]
    assert _pending(rclient, line, bridge.group) == 0


def test_recreates_a_lost_group_and_delivers_what_arrived_since(redis_url, line, rclient):
    settings = load_settings(redis_url=redis_url, lines=[line])
    sink = _ListSink()
    bridge = Bridge(rclient, settings, sink)
    bridge.run_until_idle(2)
    rclient.delete(keys.alerts(line))  # the group goes with the key
    alert, = _raise(rclient, line, 1)
    bridge.run_until_idle(5)
    assert [a.alert_id for a in sink.got] == [alert.alert_id]


def test_rides_out_a_redis_restart(line):
    with EmbeddedRedis(port=0) as server:
        settings = load_settings(redis_url=server.url, lines=[line], block_ms=100)
        client = connect(settings)
        sink = _ListSink()
        bridge = Bridge(client, settings, sink)
        worker = threading.Thread(target=bridge.run, daemon=True)
        worker.start()
        writer = redis.Redis.from_url(server.url)
        writer.xadd(keys.alerts(line), _alert(line, 0).to_fields())
        _wait(lambda: len(sink.got) == 1, 5)
        server.restart(down_s=0.5)  # AOF keeps the stream and the group's position
        writer.xadd(keys.alerts(line), _alert(line, 1).to_fields())
        _wait(lambda: len(sink.got) == 2, 10)
        bridge.stop()
        worker.join(5)
        assert not worker.is_alive()
        assert [a.alert_id for a in sink.got] == [f"{line}-a0", f"{line}-a1"]


# ----------------------------------------------------------------------------- rlrctl alerts


def test_alerts_command_prints_json_lines(redis_url, line, rclient):
    alerts = _raise(rclient, line, 3)
    res = CliRunner().invoke(main, ["alerts", "--line", line, "--since", "0", "--count", "2",
                                    "--json", "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    shown = [json.loads(ln) for ln in res.output.splitlines()]
    assert [s["alert_id"] for s in shown] == [a.alert_id for a in alerts[:2]]
    assert shown[0]["camera"] == "cam0" and shown[0]["frame_ids"] == alerts[0].frame_ids
    res = CliRunner().invoke(main, ["alerts", "--line", line, "--since", "0", "--count", "1",
                                    "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    assert f"{line}  cam0  tile  rule 3/5  max 0.9 vs thr 0.6  frames f0-0,f0-1,f0-2" in res.output
