"""`rlrctl bridge mqtt --format sparkplug` against a real Redis, a real worker and a real
Mosquitto: messages decode as Sparkplug B (with a protobuf wire decoder written here from the
specification, not the bridge's own classes), carry monotonic sequence numbers, a host's
rebirth request gets the current state, and a clean stop sends NDEATH with the session's bdSeq."""

from __future__ import annotations

import struct
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from daemon.line.producer import push_images
from daemon.wire import keys
from daemon.wire.schema import Alert
from tests.integration.line.bridges.helpers import add_part, has_group
from tests.integration.procs import Proc, daemon_env, results, start_worker, wait_for, wait_ready

BROKER = ("127.0.0.1", 1883)


# ----------------------------------------------------------------------------- decoder


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise AssertionError(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def decode(payload: bytes) -> dict:
    """Sparkplug B Payload: timestamp 1, metrics 2, seq 3; Metric: name 1, datatype 4,
    int 10, long 11, double 13, boolean 14, string 15."""
    out: dict = {"metrics": {}}
    for number, _, value in _fields(payload):
        if number == 1:
            out["timestamp"] = value
        elif number == 3:
            out["seq"] = value
        elif number == 2:
            m = dict((n, v) for n, _, v in _fields(value))
            dtype = m[4]
            raw = next(v for n, v in m.items() if n >= 10)
            if dtype == 10:
                val = struct.unpack("<d", raw)[0]
            elif dtype == 11:
                val = bool(raw)
            elif dtype == 12:
                val = raw.decode()
            else:
                val = raw
            out["metrics"][m[1].decode()] = val
    return out


def encode_rebirth() -> bytes:
    name = b"Node Control/Rebirth"
    metric = bytes([0x0A, len(name)]) + name + bytes([0x20, 11, 0x70, 1])  # datatype, bool
    return bytes([0x08, 1, 0x12, len(metric)]) + metric  # timestamp 1, the metric


# ----------------------------------------------------------------------------- the test


class _Host:
    """A Sparkplug host application: records every message of the group."""

    def __init__(self, group: str) -> None:
        self.msgs: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"test-host-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.connect(*BROKER)
        self.client.subscribe(f"spBv1.0/{group}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.msgs.append((msg.topic, decode(msg.payload)))

    def of(self, kind: str, device: str | None = None) -> list[dict]:
        with self.lock:
            return [p for t, p in self.msgs if t.split("/")[2] == kind
                    and (device is None or t.split("/")[-1] == device)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _broker_up() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(BROKER) == 0


@pytest.mark.slow
@pytest.mark.skipif(not _broker_up(), reason="needs Mosquitto on 127.0.0.1:1883")
def test_births_data_seq_rebirth_and_death_with_real_worker(redis_url, line, rclient,
                                                              alarming_model, frame_jpegs,
                                                              tmp_path):
    group = f"g{uuid.uuid4().hex[:8]}"
    host = _Host(group)
    worker = start_worker(redis_url, line, alarming_model, "w-spb", tmp_path,
                          alert_k=1, alert_n=1, alert_cooldown_s=0)
    bridge = Proc(["bridge", "mqtt", "--format", "sparkplug"],
                  daemon_env(redis_url, line, sparkplug_group=group), tmp_path / "spb.log")
    try:
        wait_ready(rclient, worker, names=("w-spb",))
        wait_for(lambda: host.of("NBIRTH"), 30, "NBIRTH", (bridge,))
        push_images(rclient, line, "camA", frame_jpegs[:3])
        push_images(rclient, line, "camB", frame_jpegs[3:4])
        wait_for(lambda: len(results(rclient, line)) == 4, 60, "4 results", (worker,))
        alerts = [Alert.from_fields(f) for _, f in rclient.xrange(keys.alerts(line))]
        wait_for(lambda: any(p["metrics"].get("Alerts/Count") == 3
                             for p in host.of("DDATA", "camA")), 15, "camA alerts", (bridge,))
        wait_for(lambda: host.of("DBIRTH", "camB"), 15, "camB birth", (bridge,))
        time.sleep(0.3)

        with host.lock:
            msgs = list(host.msgs)
        assert msgs[0][0] == f"spBv1.0/{group}/NBIRTH/{line}"
        assert msgs[0][1]["seq"] == 0 and msgs[0][1]["metrics"]["bdSeq"] == 0
        seqs = [p["seq"] for _, p in msgs]
        assert seqs == list(range(len(seqs))), "seq counts up by one from NBIRTH"
        births = {t.split("/")[-1]: i for i, (t, _) in enumerate(msgs) if "/DBIRTH/" in t}
        datas = {t.split("/")[-1]: i for i, (t, _) in enumerate(msgs) if "/DDATA/" in t}
        assert births["camA"] < datas["camA"], "a device is born before its data"
        cam_a = [r for r in results(rclient, line) if r.camera == "camA"]
        last = [p["metrics"] for p in host.of("DDATA", "camA")
                if "Inspection/LastScore" in p["metrics"]][-1]
        assert last["Inspection/LastScore"] == pytest.approx(cam_a[-1].score, rel=1e-5)
        assert last["Inspection/Frames"] == 3 and last["Inspection/Verdict"] == "anomalous"
        assert last["Inspection/FrameId"] == cam_a[-1].frame_id
        assert len([a for a in alerts if a.camera == "camA"]) == 3

        # A host asks for a rebirth: NBIRTH (seq 0) and DBIRTHs with the current state.
        n_before = len(host.of("NBIRTH"))
        host.client.publish(f"spBv1.0/{group}/NCMD/{line}", encode_rebirth(), qos=1)
        wait_for(lambda: len(host.of("NBIRTH")) > n_before, 10, "rebirth", (bridge,))
        wait_for(lambda: len(host.of("DBIRTH", "camA")) > 1, 10, "camA rebirth", (bridge,))
        assert host.of("NBIRTH")[-1]["seq"] == 0
        again = host.of("DBIRTH", "camA")[-1]["metrics"]
        assert again["Inspection/Frames"] == 3 and again["Alerts/Count"] == 3
        assert again["Inspection/LastScore"] == pytest.approx(cam_a[-1].score, rel=1e-5)

        assert bridge.stop() == 0
        wait_for(lambda: host.of("NDEATH"), 10, "NDEATH")
        assert host.of("NDEATH")[-1]["metrics"]["bdSeq"] == 0
        assert rclient.xpending(keys.alerts(line), "rlr-bridge-sparkplug")["pending"] == 0
    finally:
        bridge.stop()
        worker.stop()
        host.close()


@pytest.mark.skipif(not _broker_up(), reason="needs Mosquitto on 127.0.0.1:1883")
def test_a_lines_last_part_in_nbirth_and_ndata(redis_url, line, rclient, tmp_path):
    group = f"g{uuid.uuid4().hex[:8]}"
    host = _Host(group)
    bridge = Proc(["bridge", "sparkplug"], daemon_env(redis_url, line, sparkplug_group=group),
                  tmp_path / "spb-parts.log")
    prefix = f"Part/{line}/"
    try:
        wait_for(lambda: host.of("NBIRTH"), 30, "NBIRTH", (bridge,))
        birth = host.of("NBIRTH")[0]["metrics"]
        assert birth[prefix + "Verdict"] == "none" and birth[prefix + "PartId"] == ""
        wait_for(lambda: has_group(rclient, keys.parts(line), "rlr-bridge-sparkplug"), 20,
                 "the bridge reads parts", (bridge,))
        part = add_part(rclient, line, "SN-40122")
        wait_for(lambda: host.of("NDATA"), 15, "NDATA", (bridge,))
        data = host.of("NDATA")[0]["metrics"]
        assert data[prefix + "PartId"] == "SN-40122" and data[prefix + "Verdict"] == "reject"
        assert data[prefix + "Outcome"] == "reject" and data[prefix + "Recipe"] == "washer@2"
        assert data[prefix + "TotalMs"] == pytest.approx(part.total_ms)
        assert data[prefix + "Count"] == 1
        with host.lock:
            seqs = [p["seq"] for _, p in host.msgs]
        assert seqs == list(range(len(seqs)))
        # A rebirth carries the last part.
        host.client.publish(f"spBv1.0/{group}/NCMD/{line}", encode_rebirth(), qos=1)
        wait_for(lambda: len(host.of("NBIRTH")) > 1, 10, "rebirth", (bridge,))
        assert host.of("NBIRTH")[-1]["metrics"][prefix + "PartId"] == "SN-40122"
        assert rclient.xpending(keys.parts(line), "rlr-bridge-sparkplug")["pending"] == 0
    finally:
        bridge.stop()
        host.close()
