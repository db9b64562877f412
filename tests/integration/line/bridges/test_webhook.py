"""The webhook bridge against a real Redis and a real HTTP server."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from daemon.cli import main
from daemon.cli.settings import load_settings
from daemon.line.bridges.alertfeed import AlertFeed
from daemon.line.bridges.webhook import WebhookSink
from daemon.wire import keys
from daemon.wire.schema import DeadLetter
from tests.http_receiver import Receiver
from tests.integration.line.bridges.helpers import (
    add_part,
    has_group,
    pending,
    raise_alerts,
    raise_health,
    start_bridge,
    stop_bridge,
    wait,
)


def test_webhook_bridge_posts_camera_health_events(redis_url, line, rclient):
    events = raise_health(rclient, line)
    with Receiver([200, 200]) as rx:
        proc = start_bridge(redis_url, line, "webhook", "--url", rx.url)
        try:
            wait(lambda: len(rx.requests) >= 2, proc=proc)
            time.sleep(0.3)
        finally:
            rc, err = stop_bridge(proc)
    assert rc == 0, err
    assert [json.loads(body) for _, body in rx.requests] == [e.to_json() for e in events]
    assert len({h["Idempotency-Key"] for h, _ in rx.requests}) == 2


def test_webhook_bridge_retries_server_errors(redis_url, line, rclient):
    alert, = raise_alerts(rclient, line, 1)
    with Receiver([500, 500, 200]) as rx:
        proc = start_bridge(redis_url, line, "webhook", "--url", rx.url)
        try:
            wait(lambda: pending(rclient, line, "rlr-bridge-webhook") == 0
                  and len(rx.requests) >= 3, proc=proc)
        finally:
            rc, err = stop_bridge(proc)
    assert rc == 0, err
    assert len(rx.requests) == 3
    assert {h["Idempotency-Key"] for h, _ in rx.requests} == {alert.alert_id}
    assert json.loads(rx.requests[-1][1]) == alert.to_json()
    assert rclient.xlen(keys.dlq(line)) == 0


def test_webhook_rejection_is_dead_lettered_at_once(redis_url, line, rclient):
    alert, = raise_alerts(rclient, line, 1)
    settings = load_settings(redis_url=redis_url, lines=[line])
    with Receiver([400], body=b"camera not configured") as rx:
        bridge = AlertFeed(rclient, settings, WebhookSink(rx.url, 2.0))
        assert bridge.run_until_idle(5) == 1
    assert len(rx.requests) == 1  # a 4xx is not retried
    (_, fields), = rclient.xrange(keys.dlq(line))
    letter = DeadLetter.from_fields(fields)
    assert letter.kind == "alert" and letter.reason == "rejected"
    assert "HTTP 400" in letter.detail and "camera not configured" in letter.detail
    assert letter.original["alert_id"] == alert.alert_id
    assert pending(rclient, line, "rlr-bridge-webhook") == 0


def test_webhook_without_url_names_the_setting(monkeypatch, redis_url, line):
    monkeypatch.delenv("RLR_WEBHOOK_URL", raising=False)
    res = CliRunner().invoke(main, ["bridge", "webhook", "--line", line,
                                    "--redis-url", redis_url])
    assert res.exit_code == 2 and "RLR_WEBHOOK_URL" in res.output


def test_webhook_bridge_posts_part_verdicts(redis_url, line, rclient):
    with Receiver([200, 200]) as rx:
        proc = start_bridge(redis_url, line, "webhook", "--url", rx.url)
        try:
            wait(lambda: has_group(rclient, keys.parts(line), "rlr-bridge-webhook"), proc=proc)
            parts = [add_part(rclient, line, "SN-40122"), add_part(rclient, line, "SN-40122")]
            wait(lambda: len(rx.requests) >= 2, proc=proc)
            time.sleep(0.3)
        finally:
            rc, err = stop_bridge(proc)
    assert rc == 0, err
    assert [json.loads(body) for _, body in rx.requests] == [p.to_json() for p in parts]
    keys_sent = [h["Idempotency-Key"] for h, _ in rx.requests]
    assert len(set(keys_sent)) == 2, "one part id decided twice: two verdicts, two keys"
    assert all(k.startswith(f"part-{line}-SN-40122-") for k in keys_sent)
    assert rclient.xpending(keys.parts(line), "rlr-bridge-webhook")["pending"] == 0
