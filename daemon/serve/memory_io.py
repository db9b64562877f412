"""In-memory FrameSource + ResultSink with Redis Streams semantics, for unit tests of the
worker's logic (batching, triage, idempotency, alerts, shutdown). Integration tests use Redis."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence

from daemon.errors import SourceUnavailable
from daemon.serve.ports import Published
from daemon.serve.rules.parts import DEADLINE, FIRST, JoinRequest, join
from daemon.serve.rules.window import RecentFrame, push
from daemon.wire.groups import Claimed, Delivery
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, DeadLetter, HealthEvent, Result


class MemoryStreams:
    def __init__(self, lines: Sequence[str] = ("line1",)) -> None:
        self.lines = list(lines)
        self.frames: dict[str, list[tuple[str, dict]]] = {line: [] for line in self.lines}
        self.cursor = dict.fromkeys(self.lines, 0)
        self.pending: dict[tuple[str, str], int] = {}  # (line, id) -> deliveries
        self.results: dict[str, list[tuple[str, Result]]] = {line: [] for line in self.lines}
        self.alerts: dict[str, list[tuple[str, Alert]]] = {line: [] for line in self.lines}
        self.dlq: dict[str, list[DeadLetter]] = {line: [] for line in self.lines}
        self.shadow: dict[str, list[Result]] = {}
        self.stats: dict[str, dict[str, int]] = {line: {} for line in self.lines}
        self.heartbeats: dict[str, Mapping] = {}
        self.health: dict[str, list[HealthEvent]] = {}
        self.camera_states: dict[tuple[str, str], set[str]] = {}
        self.thumbs: dict[tuple[str, str], tuple[str, float, bytes]] = {}
        self.parts: dict[str, list[tuple[str, PartVerdict]]] = {line: [] for line in self.lines}
        self.recipes: dict[str, dict] = {}  # line -> its recipe_active hash (test sets it)
        self.part_state: dict[str, dict] = {line: {} for line in self.lines}
        self.part_done: dict[str, dict] = {line: {} for line in self.lines}
        self.part_due: dict[str, dict] = {line: {} for line in self.lines}
        self._seen: dict[tuple[str, str, str], tuple[str, str]] = {}  # -> (result, entry)
        self._windows: dict[tuple[str, str], list[str]] = {}  # JSON entries
        self._cooldown: dict[tuple[str, str], float] = {}
        self._ids = itertools.count(1)
        self.fail_next_reads = 0  # simulate a Redis outage
        self.touched = 0  # entries whose idle time the worker refreshed
        self.closed = False

    def _next_id(self) -> str:
        return f"{int(time.time() * 1000)}-{next(self._ids)}"

    def add(self, line: str, fields: Mapping) -> str:
        eid = self._next_id()
        self.frames[line].append((eid, {k.encode() if isinstance(k, str) else k: v
                                        for k, v in fields.items()}))
        return eid

    # FrameSource
    async def ensure_groups(self) -> None:
        return None

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        if self.fail_next_reads:
            self.fail_next_reads -= 1
            raise SourceUnavailable("simulated Redis outage")
        out = []
        for line in self.lines:
            entries = self.frames[line][self.cursor[line]: self.cursor[line] + count - len(out)]
            self.cursor[line] += len(entries)
            for eid, fields in entries:
                self.pending[(line, eid)] = 1
                out.append(Delivery(line, eid, fields, 1))
        if not out:
            await asyncio.sleep(min(block_ms, 20) / 1000)
        return out

    async def claim_stale(self, min_idle_ms: int, count: int) -> Claimed:
        return Claimed([], [])

    async def touch(self, held: Sequence[tuple[str, str]]) -> None:
        self.touched += len(held)

    async def prune_consumers(self, min_idle_ms: int) -> list[str]:
        return []

    async def backlog(self, line: str) -> int:
        return len(self.frames[line]) - self.cursor[line] + \
            sum(1 for (ln, _) in self.pending if ln == line)

    async def ack(self, items: Sequence[Delivery]) -> int:
        return sum(self.pending.pop((d.stream, d.entry_id), None) is not None for d in items)

    # ResultSink
    async def publish(self, items: Sequence[tuple[Delivery, Result]], window_n: int,
                      joins: Sequence[JoinRequest | None] = ()) -> list[Published]:
        out = []
        joins = list(joins) or [None] * len(items)
        for (d, res), req in zip(items, joins, strict=True):
            key = (d.stream, res.camera, res.frame_id)
            self.pending.pop((d.stream, d.entry_id), None)
            if key in self._seen:
                rid, first = self._seen[key]
                out.append(Published(False, rid, [], first))
                continue
            rid = self._next_id()
            self._seen[key] = (rid, d.entry_id)
            self.results[d.stream].append((rid, res))
            # stored as the Redis port stores it; returned, like there, for an anomalous one
            win = self._windows[(d.stream, res.camera)] = push(
                self._windows.get((d.stream, res.camera), []), RecentFrame.of(res, rid).to_json(),
                window_n)
            joined = None if req is None else join(
                self.part_state[d.stream], self.part_done[d.stream], self.part_due[d.stream],
                req, rid)
            out.append(Published(True, rid, [RecentFrame.from_json(v) for v in win]
                                 if res.is_anomaly else [], None, joined))
        return out

    async def emit_part(self, verdict: PartVerdict, first_ms: int,
                        done_ttl_s: int) -> str | None:
        line, part = verdict.line, verdict.part_id
        state = self.part_state[line].get(part)
        if state is None or state[FIRST] != str(first_ms):
            return None
        rid = self._next_id()
        self.parts[line].append((rid, verdict))
        self.part_done[line][part] = f"{rid} {state[FIRST]} {state[DEADLINE]}"
        del self.part_state[line][part]
        self.part_due[line].pop(part, None)
        return rid

    async def due_parts(self, line: str, now_ms: int, count: int) -> list[tuple[str, dict]]:
        due = sorted((t, p) for p, t in self.part_due[line].items() if t <= now_ms)[:count]
        return [(p, dict(self.part_state[line][p])) for _, p in due]

    async def active_recipes(self, lines: Sequence[str]) -> dict[str, dict]:
        return {line: dict(self.recipes.get(line, {})) for line in lines}

    async def publish_shadow(self, items: Sequence[tuple[str, Result]]) -> None:
        for line, res in items:
            self.shadow.setdefault(line, []).append(res)

    async def dead_letter(self, items: Sequence[tuple[Delivery | None, str, DeadLetter]]) -> None:
        for d, line, letter in items:
            self.dlq[line].append(letter)
            if d is not None:
                self.pending.pop((line, d.entry_id), None)
            await self.count(line, "dead_lettered", 1)

    async def count(self, line: str, field: str, n: int) -> None:
        self.stats[line][field] = self.stats[line].get(field, 0) + n

    async def publish_health(self, events: Sequence[HealthEvent]) -> list[bool]:
        out = []
        for e in events:
            state = self.camera_states.setdefault((e.line, e.camera), set())
            new = (e.kind not in state) if e.state == "raised" else (e.kind in state)
            if new:
                (state.add if e.state == "raised" else state.discard)(e.kind)
                self.health.setdefault(e.line, []).append(e)
            out.append(new)
        return out

    async def camera_health(self, line: str, camera: str) -> tuple[str, ...]:
        return tuple(sorted(self.camera_states.get((line, camera), ())))

    async def thumbnails(self, items: Sequence[tuple[str, str, str, float, bytes]],
                         ttl_s: float) -> None:
        for line, camera, frame_id, ts, data in items:
            self.thumbs[(line, camera)] = (frame_id, ts, data)

    async def raise_alert(self, alert: Alert, cooldown_s: float) -> str | None:
        key = (alert.line, alert.camera)  # the cooldown claimed as the Redis port's script does
        if time.monotonic() < self._cooldown.get(key, 0.0):
            return None
        self._cooldown[key] = time.monotonic() + cooldown_s
        rid = self._next_id()
        self.alerts[alert.line].append((rid, alert))
        return rid

    async def heartbeat(self, worker_id: str, status: Mapping, ttl_s: float) -> None:
        self.heartbeats[worker_id] = dict(status)

    async def clear_heartbeat(self, worker_id: str) -> None:
        self.heartbeats.pop(worker_id, None)

    async def close(self) -> None:
        self.closed = True
