"""The worker's ports: where frames come from and where results go.

`daemon.serve.redis_io` implements them on Redis Streams; `daemon.serve.memory_io` in memory
for unit tests. An implementation raises `daemon.errors.SourceUnavailable` while its transport
is away (never the transport's own exception types): the worker waits and retries.
Acknowledgement belongs to the sink: a frame is acknowledged in the same step that publishes
its result or dead letter, so an acknowledged frame always has its outcome recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from daemon.serve.rules.window import RecentFrame
from daemon.wire.groups import Claimed, Delivery
from daemon.wire.schema import Alert, DeadLetter, HealthEvent, Result


class Published(NamedTuple):
    new: bool  # False: a result for this camera and frame id already existed
    result_id: str | None
    window: list[RecentFrame]  # the camera's recent verdicts, newest first (only for a new
    # anomalous result, the only kind the alert rule looks at; empty otherwise)
    first_entry: str | None = None  # not new: the stream entry whose result that is
    joined: Any = None  # a new result of a part: how it joined (`rules.parts.Joined`)

    def replay_of(self, entry_id: str) -> bool:
        """Not new because this very entry was scored before (a redelivery), as opposed to
        another entry reusing a frame id that was already scored (a duplicate)."""
        return not self.new and self.first_entry in (None, entry_id)


class FrameSource(Protocol):
    async def ensure_groups(self) -> None:
        """Make sure the frames can be read (consumer groups exist)."""

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """New entries for this consumer (blocks up to `block_ms` when there are none)."""

    async def claim_stale(self, min_idle_ms: int, count: int) -> Claimed:
        """Take over entries other consumers left pending for at least `min_idle_ms` (the
        first call also returns what this consumer name left pending in an earlier run)."""

    async def touch(self, held: Sequence[tuple[str, str]]) -> None:
        """Reset the idle time of (line, entry id) this consumer still works on, without
        counting a delivery, so that no consumer (this one included) claims them."""

    async def prune_consumers(self, min_idle_ms: int) -> list[str]:
        """Forget consumers (dead workers) idle this long with nothing pending; their names."""

    async def backlog(self, line: str) -> int:
        """Entries of `line` not yet acknowledged by the group (undelivered + pending)."""

    async def ack(self, items: Sequence[Delivery]) -> int:
        """Acknowledge without an outcome (skipped frames); how many were still pending."""

    async def close(self) -> None: ...


class ResultSink(Protocol):
    async def publish(self, items: Sequence[tuple[Delivery, Result]], window_n: int,
                      joins: Sequence[Any] = ()) -> list[Published]:
        """Publish each result once per frame id, remember its verdict, join it to its part
        (`joins[i]`: a `rules.parts.JoinRequest` or None) and ack the frame."""

    async def emit_part(self, verdict: Any, first_ms: int, done_ttl_s: int) -> str | None:
        """Add the part verdict and close the part, unless it is closed already (another
        worker decided it, or `first_ms` is not the open part's): the entry id or None."""

    async def due_parts(self, line: str, now_ms: int, count: int) -> list[tuple[str, dict]]:
        """Open parts of `line` past their deadline: (part id, its state), oldest first."""

    async def active_recipes(self, lines: Sequence[str]) -> dict[str, dict]:
        """Each line's active recipe record (`keys.recipe_active`), {} where none."""

    async def publish_shadow(self, items: Sequence[tuple[str, Result]]) -> None:
        """Results of shadow models (line, result): their own stream, no ack, no alerts."""

    async def dead_letter(self, items: Sequence[tuple[Delivery | None, str, DeadLetter]]) -> None:
        """Record dead letters (line, letter) and ack their frames when there is a delivery."""

    async def count(self, line: str, field: str, n: int) -> None:
        """Add to a line counter that outlives workers (skipped, dead_lettered, ...)."""

    async def publish_health(self, events: Sequence[HealthEvent]) -> list[bool]:
        """Record camera health changes in the line's state and its health stream; per event,
        whether it was new (a raise already raised, or a clear already cleared, by another
        worker is not announced again)."""

    async def camera_health(self, line: str, camera: str) -> tuple[str, ...]:
        """The camera's raised health conditions, as the line's state has them."""

    async def thumbnails(self, items: Sequence[tuple[str, str, str, float, bytes]],
                         ttl_s: float) -> None:
        """Store each (line, camera, frame id, capture ts, JPEG) as the camera's latest
        thumbnail, expiring after `ttl_s`."""

    async def raise_alert(self, alert: Alert, cooldown_s: float) -> str | None:
        """Publish `alert` unless the camera is cooling down; the entry id or None."""

    async def heartbeat(self, worker_id: str, status: Mapping, ttl_s: float) -> None: ...

    async def clear_heartbeat(self, worker_id: str) -> None: ...

    async def close(self) -> None: ...
