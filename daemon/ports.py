"""The worker's ports: where frames come from and where results go.

`daemon.streams` implements them on Redis Streams; `daemon.memory` in memory for unit tests.
Acknowledgement belongs to the sink: a frame is acknowledged in the same step that publishes
its result or dead letter, so an acknowledged frame always has its outcome recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from daemon.alerts import Verdict
from daemon.schema import Alert, DeadLetter, Result


class Delivery(NamedTuple):
    line: str
    entry_id: str  # stream entry id, e.g. "1700000000000-0"
    fields: Mapping[bytes, bytes]
    deliveries: int  # how many times the group has handed this entry out, this one included

    @property
    def enqueued_ms(self) -> int:
        """When the entry entered the stream (milliseconds since the epoch), from its id."""
        return int(self.entry_id.split("-", 1)[0])


class Claimed(NamedTuple):
    deliveries: list[Delivery]  # taken over from idle consumers
    trimmed: list[tuple[str, str]]  # (line, entry id): pending but gone from the stream


class Published(NamedTuple):
    new: bool  # False: a result for this frame id already existed (a replay)
    result_id: str | None
    window: list[Verdict]  # the camera's recent verdicts, newest first (empty when not new)


class FrameSource(Protocol):
    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """New entries for this consumer (blocks up to `block_ms` when there are none)."""

    async def claim_stale(self, min_idle_ms: int, count: int) -> Claimed:
        """Take over entries other consumers left pending for at least `min_idle_ms`."""

    async def backlog(self, line: str) -> int:
        """Entries of `line` not yet acknowledged by the group (undelivered + pending)."""

    async def ack(self, items: Sequence[Delivery]) -> int:
        """Acknowledge without an outcome (skipped frames); how many were still pending."""

    async def close(self) -> None: ...


class ResultSink(Protocol):
    async def publish(self, items: Sequence[tuple[Delivery, Result]],
                      window_n: int) -> list[Published]:
        """Publish each result once per frame id, remember its verdict and ack the frame."""

    async def publish_shadow(self, items: Sequence[tuple[str, Result]]) -> None:
        """Results of shadow models (line, result): their own stream, no ack, no alerts."""

    async def dead_letter(self, items: Sequence[tuple[Delivery | None, str, DeadLetter]]) -> None:
        """Record dead letters (line, letter) and ack their frames when there is a delivery."""

    async def count(self, line: str, field: str, n: int) -> None:
        """Add to a line counter that outlives workers (skipped, dead_lettered, ...)."""

    async def raise_alert(self, alert: Alert, cooldown_s: float) -> str | None:
        """Publish `alert` unless the camera is cooling down; the entry id or None."""

    async def heartbeat(self, worker_id: str, status: Mapping, ttl_s: float) -> None: ...

    async def clear_heartbeat(self, worker_id: str) -> None: ...

    async def close(self) -> None: ...
