"""The webhook bridge against a local HTTP receiver: status classification, idempotency key."""

from __future__ import annotations

import json
import socket

import pytest

from daemon.errors import DeliveryError
from daemon.line.bridges.webhook import WebhookSink
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert
from tests.http_receiver import Receiver


def _alert(camera: str = "cam-1") -> Alert:
    return Alert("a-17", "line1", camera, 1714550000.5, "3/5", ["f1", "f2", "f3"],
                 [0.71, 0.93, 0.88], ["1-0", "2-0", "3-0"], "v3", 0.6, "washer")


def test_webhook_2xx_delivers_json_with_an_idempotency_key():
    with Receiver([204]) as rx:
        WebhookSink(rx.url, timeout_s=2).deliver(_alert())
    (headers, body), = rx.requests
    assert headers["Idempotency-Key"] == "a-17"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == _alert().to_json()


@pytest.mark.parametrize("status", [500, 503, 429])
def test_webhook_server_errors_and_throttling_are_retried(status):
    with Receiver([status], body=b"busy") as rx, pytest.raises(DeliveryError) as err:
        WebhookSink(rx.url, timeout_s=2).deliver(_alert())
    assert not err.value.permanent
    assert err.value.reason == f"http_{status}"


def test_webhook_client_error_is_permanent_with_status_and_body():
    with Receiver([400], body=b'{"error": "unknown camera cam-1"}') as rx, \
            pytest.raises(DeliveryError) as err:
        WebhookSink(rx.url, timeout_s=2).deliver(_alert())
    assert err.value.permanent and err.value.reason == "rejected"
    assert "HTTP 400" in err.value.detail and "unknown camera cam-1" in err.value.detail


def test_webhook_redirect_is_not_followed_as_a_get():
    with Receiver([302], headers={"Location": "http://elsewhere/"}) as rx, \
            pytest.raises(DeliveryError) as err:
        WebhookSink(rx.url, timeout_s=2).deliver(_alert())
    assert err.value.permanent and "http://elsewhere/" in err.value.detail
    assert len(rx.requests) == 1


def test_webhook_unreachable_is_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(DeliveryError) as err:
        WebhookSink(f"http://127.0.0.1:{port}/x", timeout_s=1).deliver(_alert())
    assert not err.value.permanent and err.value.reason == "network"


def test_webhook_posts_a_part_verdict_with_an_ascii_idempotency_key():
    part = PartVerdict("line1", "部品 7", "reject", "reject", 1714550000.5, 1714550000.4, 95.0,
                       {"top": {"camera": "cam-1", "score": 0.9}}, recipe="washer@2")
    with Receiver([200]) as rx:
        WebhookSink(rx.url, timeout_s=2).deliver_part(part)
    (headers, body), = rx.requests
    assert headers["Idempotency-Key"] == \
        "part-line1-%E9%83%A8%E5%93%81%207-1714550000.5"
    assert json.loads(body) == part.to_json() and json.loads(body)["type"] == "part"
