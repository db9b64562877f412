"""A whole line: producer process → Redis → worker process → alerts → MQTT bridge → subscriber."""

from __future__ import annotations

import json
import socket
import threading

import paho.mqtt.client as mqtt
import pytest

from daemon.wire import keys
from daemon.wire.schema import Alert
from tests.integration.procs import Proc, daemon_env, results, start_worker, wait_for, wait_ready

pytestmark = pytest.mark.slow


def _mosquitto() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_camera_alerts_reach_an_mqtt_subscriber(redis_url, line, rclient, alarming_model,
                                                synthetic_root, tmp_path):
    if not _mosquitto():
        pytest.skip("no MQTT broker on 127.0.0.1:1883 (start mosquitto to run this test)")
    got: list[dict] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{line}")
    sub.on_connect = lambda c, *_: c.subscribe(f"rlr/{line}/alerts/#", qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda c, u, msg: got.append({"topic": msg.topic,
                                                   **json.loads(msg.payload)})
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    assert subscribed.wait(10)
    # every frame is anomalous for this model: 3 of 5 after 3 frames, then a 60 s cool-down
    w = start_worker(redis_url, line, alarming_model, "w-line", tmp_path, alert_k=3,
                     alert_n=5, alert_cooldown_s=60)
    bridge = Proc(["bridge", "mqtt"], daemon_env(redis_url, line), tmp_path / "bridge.log")
    producer = Proc(["produce", "--source", str(synthetic_root / "tile" / "test"),
                     "--camera", "cam-tile", "--class", "tile", "--fps", "20",
                     "--limit", "12"], daemon_env(redis_url, line), tmp_path / "producer.log")
    try:
        wait_ready(rclient, w, names=("w-line",))
        wait_for(lambda: len(results(rclient, line)) >= 12, 90, "12 results", (w,))
        wait_for(lambda: got, 30, "an alert on MQTT", (bridge,))
        assert producer.p.wait(30) == 0
        alerts = [Alert.from_fields(f) for _, f in rclient.xrange(keys.alerts(line))]
        assert len(alerts) == 1  # the cool-down holds back the rest
        msg = got[0]
        assert msg["topic"] == f"rlr/{line}/alerts/cam-tile"
        assert msg["alert_id"] == alerts[0].alert_id and msg["camera"] == "cam-tile"
        assert msg["class"] == "tile" and msg["rule"] == "3/5"
        assert len(msg["frame_ids"]) == 3 and len(msg["result_ids"]) == 3
        by_id = {r.frame_id: r for r in results(rclient, line)}
        assert all(by_id[f].is_anomaly and by_id[f].mask for f in msg["frame_ids"])
    finally:
        sub.loop_stop()
        producer.stop()
        assert bridge.stop() == 0
        assert w.stop() == 0
