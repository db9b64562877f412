"""What the bridges' integration tests share: alerts, health events and part verdicts on the
streams, a bridge process, a sink that records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from daemon.errors import DeliveryError
from daemon.wire import keys
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, HealthEvent

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def make_alert(line: str, i: int) -> Alert:
    return Alert(f"{line}-a{i}", line, f"cam{i % 2}", time.time(), "3/5",
                 [f"f{i}-{k}" for k in range(3)], [0.7, 0.9, 0.8 + i / 100],
                 ["1-0", "2-0", "3-0"], "v1", 0.6, "tile")


def raise_alerts(rclient, line: str, n: int) -> list[Alert]:
    alerts = [make_alert(line, i) for i in range(n)]
    for a in alerts:
        rclient.xadd(keys.alerts(line), a.to_fields())
    return alerts


def start_bridge(redis_url: str, line: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "RLR_REDIS_URL": redis_url, "RLR_LOG_FORMAT": "json",
           "RLR_METRICS_PORT": "0"}
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "bridge", *args,
                             "--line", line], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop_bridge(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    return proc.returncode, err


def wait(cond, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"bridge exited early ({proc.returncode}): {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def pending(rclient, line: str, group: str) -> int:
    """Alerts the group read but did not ack yet; -1 before the bridge created the group."""
    try:
        return rclient.xpending(keys.alerts(line), group)["pending"]
    except redis.ResponseError:
        return -1


class ListSink:
    kind = "test"

    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[Alert] = []
        self.fail_first = fail_first

    def deliver(self, alert: Alert) -> None:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise DeliveryError("flaky", "try again")
        self.got.append(alert)

    def deliver_part(self, part: PartVerdict) -> None:
        self.got.append(part)

    def close(self) -> None:
        pass


def raise_health(rclient, line: str) -> list[HealthEvent]:
    events = [HealthEvent(line, "cam0", "blur", "raised", time.time(), time.time() - 1,
                          {"ratio": 0.1, "frame_id": "f9"}, "w1"),
              HealthEvent(line, "cam0", "blur", "cleared", time.time(), time.time() - 1,
                          {"ratio": 0.9, "frame_id": "f19"}, "w1")]
    for e in events:
        rclient.xadd(keys.health(line), e.to_fields())
    return events


def make_part(line: str, part_id: str, verdict: str = "reject", **kw) -> PartVerdict:
    """A part verdict as the worker's part rule writes it (two views, one anomalous)."""
    now = time.time()
    views = {"top": {"camera": "cam0", "frame_id": f"{part_id}-top", "score": 0.91,
                     "threshold": 0.6, "is_anomaly": verdict == "reject",
                     "model_version": "m-1", "latency_ms": 31.0, "result_id": "1-0"},
             "side": {"camera": "cam1", "frame_id": f"{part_id}-side", "score": 0.2,
                      "threshold": 0.6, "is_anomaly": False, "model_version": "m-1",
                      "latency_ms": 29.0, "result_id": "2-0"}}
    outcome = "pass" if verdict == "pass" else "reject"
    return PartVerdict(line, part_id, verdict, outcome, now, now - 0.0846, 84.6, views,
                       recipe="washer@2", product="WSH-1", product_class="washer",
                       worker="w1", **kw)


def add_part(rclient, line: str, part_id: str, verdict: str = "reject") -> PartVerdict:
    part = make_part(line, part_id, verdict)
    rclient.xadd(keys.parts(line), part.to_fields())
    return part


def has_group(rclient, key: str, group: str) -> bool:
    """Whether `group` exists on stream `key` (a bridge created it: it reads from now on)."""
    try:
        return any(g["name"].decode() == group for g in rclient.xinfo_groups(key))
    except redis.ResponseError:
        return False
