"""The worker's batching policy, as pure logic (no I/O, no asyncio, the clock passed in).

- **Admission** (`BatchPolicy.triage`): what a read brought in is dead-lettered (delivered too
  often, not a valid frame, captured in the future by a wrong clock), skipped (stale while
  the line is over its backlog bound) or admitted for decoding. A frame the worker already
  holds is ignored: XAUTOCLAIM may see it idle in the queue, but it is not lost.
- **Stale skip** (`BatchPolicy.is_stale`): a live line wants the newest frames, so while a
  line's backlog is over `RLR_BACKLOG_LIMIT`, frames older than `RLR_MAX_FRAME_AGE_S` are
  skipped (acknowledged and counted, never scored).
- **Fill or timeout** (`BatchFill`): a batch closes when it holds `RLR_BATCH_SIZE` frames or
  `RLR_BATCH_WAIT_MS` after its first frame, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from daemon.errors import FrameError
from daemon.serve.settings import BatchSettings
from daemon.wire.groups import Delivery
from daemon.wire.schema import Frame, parse_frame

T = TypeVar("T")
_CATCH_UP_COUNT = 256  # entries per read while a line is over its backlog bound


class Triage(NamedTuple):
    admitted: list[Delivery]  # every delivery the worker now holds (all three kinds below)
    dead: list[tuple[Delivery, FrameError]]
    skipped: list[Delivery]
    fresh: list[tuple[Delivery, Frame]]


@dataclass(frozen=True)
class BatchPolicy:
    """Admission and stale skip, by the numbers of `settings` (RLR_BATCH_*, RLR_MAX_*)."""

    settings: BatchSettings

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def wait_s(self) -> float:
        return self.settings.batch_wait_s

    def read_count(self, backlogs: Mapping[str, int]) -> int:
        """Entries to ask for in one read: a batch, or many while a line is over its bound,
        so the skip rule catches up with the backlog quickly."""
        over = any(b > self.settings.backlog_limit for b in backlogs.values())
        return max(self.batch_size, _CATCH_UP_COUNT) if over else self.batch_size

    def is_stale(self, backlog: int, ts: float, now: float) -> bool:
        """A frame captured at `ts` is skipped at `now` when its line's backlog is over the
        bound and the frame is older than `max_frame_age_s`."""
        s = self.settings
        return backlog > s.backlog_limit and now - ts > s.max_frame_age_s

    def triage(self, deliveries: Sequence[Delivery], held: Collection[tuple[str, str]],
               backlogs: Mapping[str, int], now: float) -> Triage:
        """Sort a read's deliveries; `held`: (line, entry id) the worker holds already."""
        s = self.settings
        out = Triage([], [], [], [])
        for d in deliveries:
            if (d.stream, d.entry_id) in held:
                continue
            out.admitted.append(d)
            if d.deliveries > s.max_deliveries:
                out.dead.append((d, FrameError(
                    "too_many_deliveries", f"delivered {d.deliveries} times without a result "
                    f"(limit RLR_MAX_DELIVERIES={s.max_deliveries}): workers crashed or "
                    "inference failed on it; see the worker logs")))
                continue
            try:
                frame = parse_frame(d.fields, s.max_payload_bytes)
            except FrameError as exc:
                out.dead.append((d, exc))
                continue
            if frame.ts > now + s.max_clock_skew_s:
                out.dead.append((d, FrameError(
                    "clock_skew", f"captured at {frame.ts:.3f}, {frame.ts - now:.0f} s in the "
                    f"future (limit RLR_MAX_CLOCK_SKEW_S={s.max_clock_skew_s:g}); set the "
                    f"camera's clock (NTP) of camera {frame.camera!r}")))
                continue
            if self.is_stale(backlogs.get(d.stream, 0), frame.ts, now):
                out.skipped.append(d)
            else:
                out.fresh.append((d, frame))
        return out


@dataclass
class BatchFill(Generic[T]):
    """One batch being filled, from its first item at `started` (monotonic seconds)."""

    size: int
    wait_s: float
    started: float
    items: list[T] = field(default_factory=list)

    def add(self, item: T) -> None:
        self.items.append(item)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.size

    def remaining(self, now: float) -> float:
        """Seconds left to wait for more items (0 when the wait is over)."""
        return max(0.0, self.started + self.wait_s - now)

    def closed(self, now: float) -> bool:
        return self.full or self.remaining(now) <= 0

