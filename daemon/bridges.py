"""Alert bridges: deliver `rlr:alerts:{line}` entries to PLC/SCADA integrations (MQTT, webhook).

Each bridge kind reads through its own consumer group (`rlr-bridge-mqtt`, `rlr-bridge-webhook`),
so every kind sees every alert, and several bridges of one kind share the work. Delivery is
at-least-once: an alert is acked only after the sink confirmed it, or after it was written to
`rlr:dlq:{line}` with kind=alert. Receivers de-duplicate by `alert_id` (the webhook sends it as
`Idempotency-Key`).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import redis

from daemon import keys, logs
from daemon.errors import DaemonError, SettingsError
from daemon.redis_conn import TRANSIENT, Backoff, read_streams
from daemon.schema import SCHEMA_VERSION, Alert, DeadLetter, Fields
from daemon.settings import Settings

log = logs.get(__name__)

GROUPS = {"mqtt": "rlr-bridge-mqtt", "webhook": "rlr-bridge-webhook"}
# A group created for the first time starts at the beginning of the (capped) stream, not at "$":
# alerts raised before the first bridge of a kind came up (a rollout where workers start first,
# or a group Redis lost and we recreate) would otherwise never be delivered, and nobody would
# know. The cost is a one-off replay of at most `alerts_maxlen` old alerts; to skip history,
# run `XGROUP CREATE rlr:alerts:{<line>} rlr-bridge-<kind> $ MKSTREAM` before the first start.
GROUP_START_ID = "0"
_EXCERPT = 300


class DeliveryError(DaemonError):
    """A sink could not deliver an alert. `permanent` ones are dead-lettered at once."""

    def __init__(self, reason: str, detail: str, permanent: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.permanent = reason, detail, permanent


class Sink(Protocol):
    kind: str

    def deliver(self, alert: Alert) -> None:
        """Return once the receiver confirmed the alert; raise `DeliveryError` otherwise."""

    def close(self) -> None: ...


class Bridge:
    """Reads the alert streams of `lines` in the sink's consumer group and delivers each alert."""

    def __init__(self, client: redis.Redis, settings: Settings, sink: Sink,
                 lines: Sequence[str] | None = None, *, start_id: str = GROUP_START_ID,
                 retry_first_s: float = 0.2, retry_cap_s: float = 5.0) -> None:
        self.client, self.settings, self.sink = client, settings, sink
        self.group = GROUPS.get(sink.kind, f"rlr-bridge-{sink.kind}")
        self.consumer = settings.consumer_name
        self.lines = {keys.alerts(name): name for name in (lines or settings.lines)}
        self.start_id, self.retry_first_s, self.retry_cap_s = start_id, retry_first_s, retry_cap_s
        self.delivered = self.dead_lettered = 0
        self._stop = threading.Event()
        self._groups_ready = False
        self._own_backlog = True  # first re-read what this consumer name left pending
        self._unacked: list[tuple[str, bytes]] = []
        self._next_claim = 0.0

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Finish the alert in flight, then return from `run()`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Deliver alerts until `stop()`; Redis outages are waited out, never fatal."""
        log.info("bridge_started", kind=self.sink.kind, group=self.group,
                 consumer=self.consumer, lines=sorted(self.lines.values()))
        backoff = Backoff(0.2, 5.0)
        try:
            while not self.stopping:
                try:
                    self.step()
                    backoff.reset()
                except TRANSIENT as exc:
                    delay = backoff.next()
                    log.warning("redis_unavailable", error=str(exc), retry_in_s=delay)
                    self._stop.wait(delay)
        finally:
            self.sink.close()
            log.info("bridge_stopped", delivered=self.delivered,
                     dead_lettered=self.dead_lettered)

    def run_until_idle(self, timeout_s: float = 10.0, block_ms: int = 100) -> int:
        """Handle alerts until a read finds none or `timeout_s` passes; the number handled."""
        deadline, total = time.monotonic() + timeout_s, 0
        while time.monotonic() < deadline and not self.stopping:
            n = self.step(block_ms)
            total += n
            if n == 0 and not self._own_backlog and self._groups_ready:
                break
        return total

    # ------------------------------------------------------------------ one round
    def step(self, block_ms: int | None = None) -> int:
        """One read (plus a stale-alert claim when due); the number of alerts handled."""
        try:
            return self._step(block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # A Redis restart without persistence, or a deleted key: recreate on the next step.
            log.warning("group_missing", group=self.group, error=str(exc))
            self._groups_ready = False
            return 0

    def _step(self, block_ms: int | None) -> int:
        self._flush_acks()
        if not self._groups_ready:
            self._ensure_groups()
        handled = 0
        if time.monotonic() >= self._next_claim:
            handled += self._claim_stale()
            self._next_claim = time.monotonic() + self.settings.claim_interval_s
        entries = self._read("0", None) if self._own_backlog else []
        if not entries:
            self._own_backlog = False
            entries = self._read(">", block_ms or self.settings.block_ms)
        for key, entry_id, fields in entries:
            if self.stopping:
                break
            self._handle(_s(key), entry_id, fields)
            handled += 1
        return handled

    def _read(self, start: str, block_ms: int | None) -> list[tuple[bytes, bytes, Fields]]:
        # COUNT 1: on stop, at most one read-but-unhandled alert per line waits for a claim.
        reply = read_streams(self.client, lambda st, block: self.client.xreadgroup(
            self.group, self.consumer, st, count=1, block=block),
            dict.fromkeys(self.lines, start), block_ms)
        return [(key, eid, fields) for key, batch in reply or [] for eid, fields in batch]

    def _ensure_groups(self) -> None:
        for key in self.lines:
            try:
                self.client.xgroup_create(key, self.group, id=self.start_id, mkstream=True)
                log.info("group_created", key=key, group=self.group, start_id=self.start_id)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def _claim_stale(self) -> int:
        """Take over alerts a crashed bridge of this kind read but never acked."""
        handled = 0
        for key in self.lines:
            reply = self.client.xautoclaim(key, self.group, self.consumer,
                                           self.settings.claim_idle_ms, "0-0", count=16)
            entries, deleted = reply[1], (reply[2] if len(reply) > 2 else [])
            if entries or deleted:
                log.info("alerts_claimed", key=key, n=len(entries) + len(deleted))
            for entry_id, fields in [*entries, *((d, None) for d in deleted)]:
                if self.stopping:
                    return handled
                self._handle(key, entry_id, fields)
                handled += 1
        return handled

    # ------------------------------------------------------------------ one alert
    def _handle(self, key: str, entry_id: bytes, fields: Fields | None) -> None:
        line = self.lines[key]
        if not fields:  # trimmed by MAXLEN while pending: say so in the DLQ rather than vanish
            self._dead_letter(key, entry_id, {}, "trimmed", "the alert was trimmed from the "
                              "stream before delivery; raise RLR_ALERTS_MAXLEN", 0)
            return
        try:
            alert = parse_alert(fields)
        except DeliveryError as exc:
            self._dead_letter(key, entry_id, fields, exc.reason, exc.detail, 0)
            return
        backoff, attempts = Backoff(self.retry_first_s, self.retry_cap_s), 0
        while True:
            attempts += 1
            try:
                self.sink.deliver(alert)
            except DeliveryError as exc:
                error = exc
            except Exception as exc:  # a sink or library bug must cost one alert, not the bridge
                error = DeliveryError("sink_error", f"{type(exc).__name__}: {exc}")
            else:
                self.delivered += 1
                log.info("alert_delivered", line=line, alert_id=alert.alert_id,
                         camera=alert.camera, attempts=attempts)
                self._ack(key, entry_id)
                return
            if error.permanent or attempts >= self.settings.bridge_max_attempts:
                reason = error.reason if error.permanent else "delivery_failed"
                self._dead_letter(key, entry_id, fields, reason, error.detail, attempts)
                return
            delay = backoff.next()
            log.warning("alert_delivery_failed", line=line, alert_id=alert.alert_id,
                        reason=error.reason, detail=error.detail, attempt=attempts,
                        retry_in_s=delay)
            if self._stop.wait(delay):
                # Left pending: a restart (same consumer name) or another bridge's claim retries.
                log.warning("alert_left_pending", line=line, alert_id=alert.alert_id)
                return
            # Retries can outlast claim_idle_ms: reset the idle time so no other bridge of this
            # kind takes the alert over and sends it in parallel.
            self.client.xclaim(key, self.group, self.consumer, 0, [entry_id], justid=True)

    def _ack(self, key: str, entry_id: bytes) -> None:
        try:
            self.client.xack(key, self.group, entry_id)
        except TRANSIENT:
            # Delivered but not acked: remember it, so Redis coming back doesn't mean a resend.
            self._unacked.append((key, entry_id))
            raise

    def _flush_acks(self) -> None:
        while self._unacked:
            self.client.xack(self._unacked[0][0], self.group, self._unacked[0][1])
            self._unacked.pop(0)

    def _dead_letter(self, key: str, entry_id: bytes, fields: Fields, reason: str, detail: str,
                     attempts: int) -> None:
        line = self.lines[key]
        letter = DeadLetter(_s(entry_id), reason, detail[:1000], self.consumer, time.time(),
                            attempts, kind="alert", original=dict(fields))
        # One transaction (both keys share the {line} slot): never acked without the letter.
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(keys.dlq(line), letter.to_fields(), maxlen=self.settings.dlq_maxlen,
                  approximate=True)
        pipe.xack(key, self.group, entry_id)
        pipe.execute()
        self.dead_lettered += 1
        log.error("alert_dead_lettered", line=line, entry=_s(entry_id), reason=reason,
                  detail=detail[:_EXCERPT], attempts=attempts, sink=self.sink.kind)


def parse_alert(fields: Fields) -> Alert:
    """An alerts-stream entry as an `Alert`; `DeliveryError` (permanent) when unreadable."""
    version = _s(fields.get(b"v", fields.get("v", b"")))
    if version.split(".")[0] != SCHEMA_VERSION:
        raise DeliveryError("unsupported_version", f"alert schema v={version!r}, this bridge "
                            f"reads v={SCHEMA_VERSION}; upgrade the bridge or the worker", True)
    try:
        return Alert.from_fields(fields)
    except (KeyError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise DeliveryError("malformed", f"{type(exc).__name__}: {exc}", True) from None


def _s(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------- MQTT


def check_topic_template(template: str) -> None:
    try:
        template.format(line="line", camera="camera")
    except (KeyError, IndexError, ValueError) as exc:
        raise SettingsError(f"RLR_MQTT_TOPIC={template!r} is not a valid topic template ({exc}); "
                            "use the fields {line} and {camera}, e.g. rlr/{line}/alerts/{camera}"
                            ) from None


def mqtt_topic(template: str, alert: Alert) -> str:
    topic = template.format(line=alert.line, camera=alert.camera)
    if not topic or any(c in topic for c in "+#\0"):
        raise DeliveryError("bad_topic", f"topic {topic!r} is empty or holds an MQTT wildcard; "
                            "fix RLR_MQTT_TOPIC or the camera name", permanent=True)
    return topic


class MqttSink:
    """Publishes `Alert.to_json()` to `settings.mqtt_topic` (not retained); paho reconnects."""

    kind = "mqtt"

    def __init__(self, settings: Settings, client_id: str | None = None,
                 timeout_s: float = 5.0) -> None:
        check_topic_template(settings.mqtt_topic)
        url = urlsplit(settings.mqtt_url)
        tls = url.scheme == "mqtts"
        self.host, self.port = url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883)
        self.where = f"{url.scheme}://{self.host}:{self.port}"
        self.template, self.qos, self.timeout_s = settings.mqtt_topic, settings.mqtt_qos, timeout_s
        self._connected = threading.Event()
        self._started = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"rlr-bridge-{settings.consumer_name}")
        if tls:
            self.client.tls_set()
        username = settings.mqtt_username or url.username
        password = (settings.mqtt_password.get_secret_value() if settings.mqtt_password
                    else url.password)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def start(self, wait_s: float = 0.0) -> bool:
        """Connect in the background (paho retries forever); True once connected."""
        if not self._started:
            self._started = True
            self.client.connect_async(self.host, self.port, keepalive=30)
            self.client.loop_start()
        return self._connected.wait(wait_s)

    def deliver(self, alert: Alert) -> None:
        topic = mqtt_topic(self.template, alert)
        # Publishing while disconnected would queue the message inside paho and send it on
        # reconnect, on top of our own retry: wait for the connection instead.
        if not self.start(self.timeout_s):
            raise DeliveryError("mqtt_unavailable", f"no connection to {self.where}")
        info = self.client.publish(topic, json.dumps(alert.to_json()), qos=self.qos,
                                   retain=False)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise DeliveryError("mqtt_publish_failed", f"{topic}: {exc}") from None
        if not info.is_published():
            raise DeliveryError("mqtt_timeout", f"{topic}: broker {self.where} did not confirm "
                                f"within {self.timeout_s}s (QoS {self.qos})")

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_connect_refused", broker=self.where, reason=str(reason_code))
            return
        self._connected.set()
        log.info("mqtt_connected", broker=self.where)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        log.warning("mqtt_disconnected", broker=self.where, reason=str(reason_code))


# ----------------------------------------------------------------------------- webhook


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without the body: a 200 there is no delivery.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class WebhookSink:
    """POSTs `Alert.to_json()` with an `Idempotency-Key: <alert_id>` header."""

    kind = "webhook"
    RETRY_STATUS = frozenset({408, 429})  # plus every 5xx

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self._opener = urllib.request.build_opener(_NoRedirect)

    def deliver(self, alert: Alert) -> None:
        request = urllib.request.Request(
            self.url, data=json.dumps(alert.to_json()).encode(), method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": alert.alert_id,
                     "User-Agent": "rlr-bridge"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(_EXCERPT).decode(errors="replace")
            detail = f"HTTP {status} from {self.url}: {' '.join(body.split()) or '(no body)'}"
            if status >= 500 or status in self.RETRY_STATUS:
                raise DeliveryError(f"http_{status}", detail) from None
            if 300 <= status < 400:
                detail += (f" (redirect to {exc.headers.get('Location')}; point RLR_WEBHOOK_URL "
                           "at the final URL)")
            raise DeliveryError("rejected", detail, permanent=True) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused,
            # DNS, timeout, connection dropped mid-response: all worth another try
            reason = getattr(exc, "reason", exc)
            raise DeliveryError("network", f"{self.url}: {reason}") from None

    def close(self) -> None:
        pass
