"""The alert feed (what the MQTT and webhook bridges run) against a real Redis: retries, dead
letters, claims, lost groups, a Redis restart; and `rlrctl alerts`."""

from __future__ import annotations

import json
import threading
import time

import redis
from click.testing import CliRunner

from daemon.cli import main
from daemon.cli.settings import load_settings
from daemon.line.bridges.alertfeed import AlertFeed
from daemon.line.embedded import EmbeddedRedis
from daemon.wire import keys
from daemon.wire.clients import connect
from daemon.wire.schema import DeadLetter
from tests.integration.line.bridges.helpers import (
    ListSink,
    make_alert,
    pending,
    raise_alerts,
    wait,
)


def test_gives_up_after_max_attempts_into_the_dlq(redis_url, line, rclient):
    raise_alerts(rclient, line, 1)
    settings = load_settings(redis_url=redis_url, lines=[line], bridge_max_attempts=3)
    sink = ListSink(fail_first=10)
    bridge = AlertFeed(rclient, settings, sink, retry_first_s=0.01)
    bridge.run_until_idle(5)
    (_, fields), = rclient.xrange(keys.dlq(line))
    letter = DeadLetter.from_fields(fields)
    assert (letter.reason, letter.deliveries, letter.kind) == ("delivery_failed", 3, "alert")
    assert sink.fail_first == 7 and not sink.got


def test_takes_over_alerts_a_crashed_bridge_left_pending(redis_url, line, rclient):
    alert, = raise_alerts(rclient, line, 1)
    settings = load_settings(redis_url=redis_url, lines=[line], claim_idle_ms=100)
    sink = ListSink()
    bridge = AlertFeed(rclient, settings, sink)
    bridge.ensure_groups()
    # another bridge reads the alert and dies before delivering it
    rclient.xreadgroup(bridge.group, "crashed", {keys.alerts(line): ">"}, count=1)
    time.sleep(0.15)
    bridge.run_until_idle(5)
    assert [a.alert_id for a in sink.got] == [alert.alert_id]
    assert pending(rclient, line, bridge.group) == 0


def test_recreates_a_lost_group_and_delivers_what_arrived_since(redis_url, line, rclient):
    settings = load_settings(redis_url=redis_url, lines=[line])
    sink = ListSink()
    bridge = AlertFeed(rclient, settings, sink)
    bridge.run_until_idle(2)
    rclient.delete(keys.alerts(line))  # the group goes with the key
    alert, = raise_alerts(rclient, line, 1)
    bridge.run_until_idle(5)
    assert [a.alert_id for a in sink.got] == [alert.alert_id]


def test_rides_out_a_redis_restart(line):
    with EmbeddedRedis(port=0) as server:
        settings = load_settings(redis_url=server.url, lines=[line], block_ms=100)
        client = connect(settings)
        sink = ListSink()
        bridge = AlertFeed(client, settings, sink)
        worker = threading.Thread(target=bridge.run, daemon=True)
        worker.start()
        writer = redis.Redis.from_url(server.url)
        writer.xadd(keys.alerts(line), make_alert(line, 0).to_fields())
        wait(lambda: len(sink.got) == 1, 5)
        server.restart(down_s=0.5)  # AOF keeps the stream and the group's position
        writer.xadd(keys.alerts(line), make_alert(line, 1).to_fields())
        wait(lambda: len(sink.got) == 2, 10)
        bridge.stop()
        worker.join(5)
        assert not worker.is_alive()
        assert [a.alert_id for a in sink.got] == [f"{line}-a0", f"{line}-a1"]


# ----------------------------------------------------------------------------- rlrctl alerts


def test_alerts_command_prints_json_lines(redis_url, line, rclient):
    alerts = raise_alerts(rclient, line, 3)
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
