"""The MQTT bridge against a real Redis and a real Mosquitto."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from daemon.wire import keys
from tests.integration.line.bridges.helpers import (
    MQTT_HOST,
    MQTT_PORT,
    add_part,
    has_group,
    make_alert,
    pending,
    raise_alerts,
    raise_health,
    start_bridge,
    stop_bridge,
    wait,
)


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
    alerts = raise_alerts(rclient, line, 3)  # raised before the bridge ever ran: still delivered
    proc = start_bridge(redis_url, line, "mqtt", "--mqtt-url", f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
    try:
        wait(lambda: len(mqtt_subscriber) >= 3, proc=proc)
        late = make_alert(line, 3)
        rclient.xadd(keys.alerts(line), late.to_fields())
        wait(lambda: len(mqtt_subscriber) >= 4, proc=proc)
        time.sleep(0.3)  # a duplicate would arrive now
    finally:
        rc, err = stop_bridge(proc)
    assert rc == 0, err
    expected = {a.alert_id: a for a in [*alerts, late]}
    assert len(mqtt_subscriber) == 4
    for topic, payload in mqtt_subscriber:
        a = expected.pop(payload["alert_id"])
        assert topic == f"rlr/{line}/alerts/{a.camera}"
        assert payload == a.to_json()
    assert pending(rclient, line, "rlr-bridge-mqtt") == 0
    events = [json.loads(ln)["event"] for ln in err.splitlines() if ln.startswith("{")]
    assert events.count("alert_delivered") == 4 and "bridge_stopped" in events


def test_mqtt_bridge_carries_camera_health_on_its_own_topic(redis_url, line, rclient,
                                                          mqtt_subscriber):
    events = raise_health(rclient, line)
    alert, = raise_alerts(rclient, line, 1)
    proc = start_bridge(redis_url, line, "mqtt", "--mqtt-url", f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
    try:
        wait(lambda: len(mqtt_subscriber) >= 3, proc=proc)
        time.sleep(0.3)  # a duplicate would arrive now
    finally:
        rc, err = stop_bridge(proc)
    assert rc == 0, err
    health = [(t, p) for t, p in mqtt_subscriber if p.get("type") == "camera_health"]
    assert health == [(f"rlr/{line}/health/cam0", e.to_json()) for e in events]
    assert [p["alert_id"] for t, p in mqtt_subscriber if "/alerts/" in t] == [alert.alert_id]
    assert rclient.xpending(keys.health(line), "rlr-bridge-mqtt")["pending"] == 0


def test_mqtt_bridge_publishes_part_verdicts_on_the_lines_parts_topic(redis_url, line, rclient,
                                                                      mqtt_subscriber):
    add_part(rclient, line, "SN-0")  # decided before the bridge's group existed: not resent
    proc = start_bridge(redis_url, line, "mqtt", "--mqtt-url", f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
    try:
        wait(lambda: has_group(rclient, keys.parts(line), "rlr-bridge-mqtt"), proc=proc)
        parts = [add_part(rclient, line, "SN-1"), add_part(rclient, line, "部品/7", "pass")]
        wait(lambda: len(mqtt_subscriber) >= 2, proc=proc)
        time.sleep(0.3)  # a duplicate would arrive now
    finally:
        rc, err = stop_bridge(proc)
    assert rc == 0, err
    assert mqtt_subscriber == [(f"rlr/{line}/parts", p.to_json()) for p in parts]
    assert mqtt_subscriber[1][1]["part_id"] == "部品/7" and mqtt_subscriber[1][1]["type"] == "part"
    assert rclient.xpending(keys.parts(line), "rlr-bridge-mqtt")["pending"] == 0
