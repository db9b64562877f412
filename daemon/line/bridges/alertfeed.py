"""The alert bridges' feed (`mqtt`, `webhook`): deliver `rlr:alerts:{line}` entries, camera
health events (`rlr:health:{line}`) and part verdicts (`rlr:parts:{line}`) one at a time to a
`Sink`, the plug-in's receiver.

Each bridge kind reads through its own consumer group (`rlr-bridge-mqtt`, `rlr-bridge-webhook`),
so every kind sees every alert, and several bridges of one kind share the work. Delivery is
at-least-once: an alert is acked only after the sink confirmed it, or after it was written to
`rlr:dlq:{line}` with kind=alert. Receivers de-duplicate by `alert_id` (the webhook sends it as
`Idempotency-Key`). Part verdicts are delivered the same way (dead letters with kind=part),
from the verdicts decided after the kind's group was first created (`PARTS_START_ID`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

import redis

from daemon import logs
from daemon.errors import DeliveryError
from daemon.line.bridges.base import dead_letter, feed_forever, group_name
from daemon.line.settings import AlertBridgeSettings
from daemon.supervisor import Supervisor
from daemon.wire import keys
from daemon.wire.backoff import Backoff
from daemon.wire.clients import away, is_cluster
from daemon.wire.groups import ConsumerGroup, Delivery, run_sync
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import SCHEMA_MAJOR, SCHEMA_VERSION, Alert, DeadLetter, Fields, HealthEvent
from daemon.wire.text import entry_field

log = logs.get(__name__)

# A group created for the first time starts at the beginning of the (capped) stream, not at "$":
# alerts raised before the first bridge of a kind came up (a rollout where workers start first,
# or a group Redis lost and we recreate) would otherwise never be delivered, and nobody would
# know. The cost is a one-off replay of at most `alerts_maxlen` old alerts; to skip history,
# run `XGROUP CREATE rlr:alerts:{<line>} rlr-bridge-<kind> $ MKSTREAM` before the first start.
GROUP_START_ID = "0"
# Part verdicts are many (one per part, where alerts are rare): a group created for the first
# time starts at the stream's end, so adding a bridge to a running line does not resend days of
# verdicts to the MES. The recorder keeps every verdict; a group that exists misses nothing.
PARTS_START_ID = "$"
_HEALTH = "health:"  # the group's name for a line's health stream: "health:<line>"
_PARTS = "parts:"  # ... and for its part verdicts: "parts:<line>"
_EXCERPT = 300


class Sink(Protocol):
    """Where an alert bridge delivers: returns once the receiver confirmed, raises
    `DeliveryError` otherwise (`permanent` when retrying cannot help); the feed does the
    retries and dead letters."""

    kind: str

    def deliver(self, alert: Alert) -> None:
        """Return once the receiver confirmed the alert; raise `DeliveryError` otherwise."""

    def deliver_health(self, event: HealthEvent) -> None:
        """The same for a camera health event (raised or cleared)."""

    def deliver_part(self, part: PartVerdict) -> None:
        """The same for a part verdict."""

    def close(self) -> None: ...


class AlertFeed:
    """Reads the alert streams of `lines` in the sink's consumer group and delivers each alert."""

    def __init__(self, client: redis.Redis, settings: AlertBridgeSettings, sink: Sink,
                 lines: Sequence[str] | None = None, *, start_id: str = GROUP_START_ID,
                 retry_first_s: float = 0.2, retry_cap_s: float = 5.0) -> None:
        self.client, self.settings, self.sink = client, settings, sink
        self.group = group_name(sink.kind)
        self.consumer = settings.consumer_name
        self.lines = {keys.alerts(name): name for name in (lines or settings.lines)}
        # Camera health events travel the same way, on their own stream (and topic).
        names = list(lines or settings.lines)
        parts = {keys.parts(name): f"{_PARTS}{name}" for name in names}
        streams = {**self.lines, **{keys.health(name): f"{_HEALTH}{name}" for name in names},
                   **parts}
        self.reader = ConsumerGroup(self.group, self.consumer, streams, start_id=start_id,
                                    cluster=is_cluster(client))
        self.parts_start = ConsumerGroup(self.group, self.consumer, parts,
                                         start_id=PARTS_START_ID, cluster=is_cluster(client))
        self.retry_first_s, self.retry_cap_s = retry_first_s, retry_cap_s
        self.delivered = self.dead_lettered = 0
        self._stop = threading.Event()
        self._groups_ready = False
        self._own_backlog = True  # first re-read what this consumer name left pending
        self._unacked: list[Delivery] = []
        self._next_claim = 0.0

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Finish the alert in flight, then return from `run()`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Deliver alerts until `stop()`. Redis outages are waited out; any other failure of
        the loop is logged and the loop restarted (`Supervisor`); one that keeps failing
        raises `TaskFailed`, so the process exits non-zero and gets restarted."""
        log.info("bridge_started", kind=self.sink.kind, group=self.group,
                 consumer=self.consumer, lines=sorted(self.lines.values()))
        supervisor = Supervisor(f"bridge {self.sink.kind}",
                                max_failures=self.settings.task_max_failures,
                                window_s=self.settings.task_failure_window_s,
                                on_fatal=lambda exc: self._stop.set())
        try:
            supervisor.call_forever("deliver", self._deliver_until_stopped, self._stop)
        finally:
            self.sink.close()
            log.info("bridge_stopped", delivered=self.delivered,
                     dead_lettered=self.dead_lettered)
        if supervisor.fatal is not None:
            raise supervisor.fatal

    def _deliver_until_stopped(self) -> None:
        feed_forever(self, self._stop, self.settings.block_ms)

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
        """One read (plus a stale-alert claim when due); the number of alerts handled. A lost
        group is recreated by the group helper and the read retried."""
        self._flush_acks()
        if not self._groups_ready:
            self.ensure_groups()
        handled = 0
        if time.monotonic() >= self._next_claim:
            handled += self._claim_stale()
            self._next_claim = time.monotonic() + self.settings.claim_interval_s
        batch: list[Delivery] = []
        if self._own_backlog:
            # COUNT 1: on stop, at most one read-but-unhandled alert per line waits for a claim.
            own = run_sync(self.client, self.reader.pending_own(1))
            batch = [*own.trimmed, *own.deliveries]
        if not batch:
            self._own_backlog = False
            batch = run_sync(self.client, self.reader.read(1, block_ms or self.settings.block_ms))
        return handled + self._handle_all(batch)

    def start(self) -> None:
        """(Re)create the groups: at start, and after Redis was away."""
        self.ensure_groups()

    def ensure_groups(self) -> None:
        for key in run_sync(self.client, self.parts_start.ensure()):
            log.info("group_created", key=key, group=self.group,
                     start_id=self.parts_start.start_id)
        for key in run_sync(self.client, self.reader.ensure()):
            log.info("group_created", key=key, group=self.group, start_id=self.reader.start_id)
        self._groups_ready = True

    def _claim_stale(self) -> int:
        """Take over alerts a crashed bridge of this kind read but never acked."""
        claimed = run_sync(self.client, self.reader.claim_stale(self.settings.claim_idle_ms, 16))
        batch = [*claimed.deliveries, *claimed.trimmed]
        if batch:
            log.info("alerts_claimed", n=len(batch))
        return self._handle_all(batch)

    def _handle_all(self, batch: list[Delivery]) -> int:
        """Handle alerts in order until stopped; how many were handled."""
        handled = 0
        for d in batch:
            if self.stopping:
                break
            self._handle(d)
            handled += 1
        return handled

    # ------------------------------------------------------------------ one alert
    def _handle(self, d: Delivery) -> None:
        line, fields = _line(d), d.fields
        if not fields:  # trimmed by MAXLEN while pending: say so in the DLQ rather than vanish
            self._dead_letter(d, "trimmed", "the entry was trimmed from the stream before "
                              "delivery; raise RLR_ALERTS_MAXLEN / RLR_HEALTH_MAXLEN / "
                              "RLR_PARTS_MAXLEN", 0)
            return
        try:
            alert = parse_health(fields) if d.stream.startswith(_HEALTH) else \
                parse_part(fields) if d.stream.startswith(_PARTS) else parse_alert(fields)
        except DeliveryError as exc:
            self._dead_letter(d, exc.reason, exc.detail, 0)
            return
        backoff, attempts = Backoff(self.retry_first_s, self.retry_cap_s), 0
        while True:
            attempts += 1
            try:
                if isinstance(alert, HealthEvent):
                    self.sink.deliver_health(alert)
                elif isinstance(alert, PartVerdict):
                    self.sink.deliver_part(alert)
                else:
                    self.sink.deliver(alert)
            except DeliveryError as exc:
                error = exc
            except Exception as exc:  # a sink or library bug must cost one alert, not the bridge
                error = DeliveryError("sink_error", f"{type(exc).__name__}: {exc}")
            else:
                self.delivered += 1
                log.info("alert_delivered", line=line, alert_id=_ident(alert),
                         camera=getattr(alert, "camera", ""), attempts=attempts)
                self._ack(d)
                return
            if error.permanent or attempts >= self.settings.bridge_max_attempts:
                reason = error.reason if error.permanent else "delivery_failed"
                self._dead_letter(d, reason, error.detail, attempts)
                return
            delay = backoff.next()
            log.warning("alert_delivery_failed", line=line, alert_id=_ident(alert),
                        reason=error.reason, detail=error.detail, attempt=attempts,
                        retry_in_s=delay)
            if self._stop.wait(delay):
                # Left pending: a restart (same consumer name) or another bridge's claim retries.
                log.warning("alert_left_pending", line=line, alert_id=_ident(alert))
                return
            # Retries can outlast claim_idle_ms: reset the idle time so no other bridge of this
            # kind takes the alert over and sends it in parallel.
            run_sync(self.client, self.reader.touch([d]))

    def _ack(self, d: Delivery) -> None:
        try:
            run_sync(self.client, self.reader.ack([d]))
        except Exception as exc:
            if away(exc):
                # Delivered, not acked: remember it, so Redis coming back means no resend.
                self._unacked.append(d)
            raise

    def _flush_acks(self) -> None:
        while self._unacked:
            run_sync(self.client, self.reader.ack(self._unacked[:1]))
            self._unacked.pop(0)

    def _dead_letter(self, d: Delivery, reason: str, detail: str, attempts: int) -> None:
        kind = "part" if d.stream.startswith(_PARTS) else "alert"
        letter = DeadLetter(d.entry_id, reason, detail[:1000], self.consumer, time.time(),
                            attempts, kind=kind, original=dict(d.fields))
        line = _line(d)
        dead_letter(self.client, self.settings, self.reader.keys[d.stream], self.group, d, line,
                    letter)
        self.dead_lettered += 1
        log.error("alert_dead_lettered", line=line, entry=d.entry_id, reason=reason,
                  detail=detail[:_EXCERPT], attempts=attempts, sink=self.sink.kind)


def parse_health(fields: Fields) -> HealthEvent:
    """A health-stream entry as a `HealthEvent`; `DeliveryError` (permanent) when unreadable."""
    return _parse(fields, HealthEvent, "health event")


def parse_part(fields: Fields) -> PartVerdict:
    """A parts-stream entry as a `PartVerdict`; `DeliveryError` (permanent) when unreadable."""
    return _parse(fields, PartVerdict, "part verdict")


def _line(d: Delivery) -> str:
    return d.stream.removeprefix(_HEALTH) if d.stream.startswith(_HEALTH) else \
        d.stream.removeprefix(_PARTS) if d.stream.startswith(_PARTS) else d.stream


def _ident(item: Alert | HealthEvent | PartVerdict) -> str:
    if isinstance(item, HealthEvent):
        return f"health:{item.camera}:{item.kind}:{item.state}:{item.ts!r}"
    if isinstance(item, PartVerdict):
        return f"part:{item.part_id}:{item.ts!r}"
    return item.alert_id


def parse_alert(fields: Fields) -> Alert:
    """An alerts-stream entry as an `Alert`; `DeliveryError` (permanent) when unreadable."""
    return _parse(fields, Alert, "alert")


def _parse(fields: Fields, cls, what: str):
    version = entry_field(fields, "v") or ""
    if version.split(".")[0] != SCHEMA_MAJOR:
        raise DeliveryError("unsupported_version", f"{what} schema v={version!r}, this bridge "
                            f"reads v={SCHEMA_VERSION}; upgrade the bridge or the worker", True)
    try:
        return cls.from_fields(fields)
    except (KeyError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise DeliveryError("malformed", f"{type(exc).__name__}: {exc}", True) from None
