"""Everything the worker writes about a frame through its result sink: the result of a scored
frame (mask drawn, then the rules of `daemon.serve.rules` run over it), or its dead letter, or
its skip.

Publishing overlaps the next batch's inference, so the model never waits for Redis; at most
`concurrency` batches are in flight (bounded memory), and results still leave in batch order,
so a model switch shows at one point in the results stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from daemon import logs
from daemon.errors import FrameError
from daemon.serve.ports import Published
from daemon.serve.prometheus import WorkerMetrics
from daemon.serve.rules.base import Fresh, Rule
from daemon.serve.settings import WorkerSettings
from daemon.serve.verdicts import Verdict, draw_masks, make_result
from daemon.supervisor import Supervisor
from daemon.wire.codec import thumbnail
from daemon.wire.groups import Delivery
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, DeadLetter, Frame, HealthEvent, Result, keep_for_dead_letter
from daemon.wire.text import entry_field

T = TypeVar("T")
log = logs.get("rlr.worker")


@dataclass
class WorkerStats:
    read: int = 0
    done: int = 0
    replayed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    alerts: int = 0
    batches: int = 0


@dataclass
class Scored:
    """One inferred batch waiting to be published."""

    items: list[tuple[Delivery, Frame]]
    verdicts: list[Verdict]
    shadow: list[tuple[int, Verdict]]  # (index into items, the line's shadow model's verdict)
    start: float  # wall time the batch started (queue time ends here)
    infer_ms: float
    measures: list = field(default_factory=list)  # camera-health measures, per item
    manifests: dict = field(default_factory=dict)  # version -> manifest (calibration)
    images: list = field(default_factory=list)  # per item, the image decoded for the model


class Publisher:
    """Settles frames through `sink` (a `ResultSink`): `submit` scored batches, `skip` stale
    frames, `dead_letter` bad ones. `release` tells the worker a frame is settled; `retry`
    runs a sink call through outages."""

    def __init__(self, sink: Any, settings: WorkerSettings, rules: Sequence[Rule],
                 metrics: WorkerMetrics, stats: WorkerStats, backlogs: Mapping[str, int],
                 retry: Callable[[Callable[[], Awaitable[T]], str], Awaitable[T]],
                 pool: Callable[[], Executor], release: Callable[[Iterable[Delivery]], None],
                 on_error: Callable[[str], None], supervisor: Supervisor,
                 concurrency: int = 2, recipes: Any = None) -> None:
        self.sink, self.s, self.rules, self.metrics = sink, settings, list(rules), metrics
        self.stats, self.backlogs = stats, backlogs
        self.worker_id = settings.consumer_name
        self.retry, self.pool, self.release, self.on_error = retry, pool, release, on_error
        self.supervisor, self.recipes = supervisor, recipes  # recipes: serve.recipes.LineRecipes
        # the longest window of each camera's verdicts a rule reads (kept by the sink)
        self._history = max((r.history for r in self.rules), default=1) or 1
        self._shared = _Retried(sink, retry)
        self._throttle = logs.Throttle(5.0)
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._last: asyncio.Task | None = None
        # (line, camera) -> when its last thumbnail was written / its last anomalous frames
        # (frame id, frame, mask): the evidence an alert keeps; bytes held, nothing copied
        self._thumb_at: dict[tuple[str, str], float] = {}
        self._recent: dict[tuple[str, str], deque] = {}
        self._thumb_task: asyncio.Task | None = None

    async def skip(self, items: list[Delivery]) -> None:
        """Acknowledge stale frames unscored, and count them where they outlive the worker."""
        by_line: dict[str, list[Delivery]] = {}
        for d in items:
            by_line.setdefault(d.stream, []).append(d)
        for line, group in by_line.items():
            # count what this ack settled, so a redelivered frame is never counted twice
            n = await self.retry(lambda group=group: self.sink.ack(group), "ack_skipped")
            if n:
                await self.retry(lambda line=line, n=n: self.sink.count(line, "skipped", n),
                                  "count")
            self.metrics.frames_skipped.labels(line).inc(n)
            self.stats.skipped += n
            since = self._throttle.due(("skipped", line), n)
            if since:  # one event every few seconds under overload, with the count
                log.warning("frames_skipped", line=line, n=since,
                            backlog=self.backlogs.get(line), backlog_limit=self.s.backlog_limit,
                            max_age_s=self.s.max_frame_age_s)
        self.release(items)

    def flush_logs(self) -> None:
        """Log the skips held back by the rate limit once their interval is over."""
        for key, n in self._throttle.overdue().items():
            if key[0] == "skipped":
                log.warning("frames_skipped", line=key[1], n=n,
                            backlog=self.backlogs.get(key[1]),
                            backlog_limit=self.s.backlog_limit, max_age_s=self.s.max_frame_age_s)

    async def trimmed(self, items: list[Delivery]) -> None:
        """Dead-letter pending frames that the stream cap cut before any worker finished."""
        await self.dead_letter([(d, d.stream, DeadLetter(
            d.entry_id, "trimmed", "the frame was trimmed from the stream (MAXLEN cap, "
            "RLR_FRAMES_MAXLEN) before any worker finished it; raise the cap or add workers",
            self.worker_id, time.time(), d.deliveries)) for d in items])

    def letter(self, d: Delivery, exc: FrameError) -> tuple[Delivery, str, DeadLetter]:
        """The dead letter of frame `d` (its payload kept when within the size limit)."""
        kept = keep_for_dead_letter(d.fields, self.s.max_payload_bytes)
        return d, d.stream, DeadLetter(d.entry_id, exc.reason, exc.detail, self.worker_id,
                                     time.time(), d.deliveries, "frame", kept)

    async def dead_letter(self, items: list[tuple[Delivery, str, DeadLetter]]) -> None:
        """Record dead letters (the sink acknowledges their frames in the same step)."""
        if not items:
            return
        await self.retry(lambda: self.sink.dead_letter(items), "dead_letter")
        self.release(d for d, _, _ in items)
        for _, line, letter in items:
            self.metrics.frames_dead.labels(line, letter.reason).inc()
            since = self._throttle.due(("dead", line, letter.reason))
            if since:
                log.warning("frame_dead_lettered", line=line, entry=letter.source_id,
                            reason=letter.reason, detail=letter.detail, n=since,
                            camera=entry_field(letter.original, "camera"))
        self.stats.dead_lettered += len(items)


    async def submit(self, batch: Scored) -> None:
        """Start publishing `batch`; waits only while `concurrency` batches are in flight."""
        await self._slots.acquire()
        task = asyncio.create_task(self._publish(batch, self._last), name="publish")
        self._last = task
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def drain(self) -> None:
        """Wait until every submitted batch is published (and the last thumbnails)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._thumb_task is not None:
            await asyncio.gather(self._thumb_task, return_exceptions=True)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._thumb_task is not None:
            self._thumb_task.cancel()

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.on_error(f"publish failed: {type(exc).__name__}: {exc}")
            self.supervisor.report("publisher", exc)  # logs it; gives up if it keeps failing

    async def _publish(self, batch: Scored, previous: asyncio.Task | None) -> None:
        try:
            await self._publish_batch(batch, previous)
        except Exception:
            # Not published: the frames are no longer ours to hold; a redelivery retries them
            # (and dead-letters them after RLR_MAX_DELIVERIES).
            self.release(d for d, _ in batch.items)
            raise

    async def _publish_batch(self, batch: Scored, previous: asyncio.Task | None) -> None:
        verdicts = await self._draw_masks(batch.verdicts)
        if previous is not None:  # results leave in batch order
            await asyncio.gather(previous, return_exceptions=True)
        now = time.time()
        pairs = self._results(batch, verdicts, now)
        await self._publish_shadow(batch, now)
        published = await self._publish_results(pairs)
        fresh = self._replay_check(batch, pairs, published)
        thumbs = self._thumbnails_due(batch, fresh, now)
        self._hold_evidence(batch, fresh)
        await self._run_rules(fresh)
        if thumbs:
            self._start_thumbnails(thumbs)

    async def _draw_masks(self, verdicts: list[Verdict]) -> list[Verdict]:
        """The verdicts with their masks drawn as PNG (on the CPU pool), if any has a mask."""
        if not any(v.mask is not None for v in verdicts):
            return verdicts
        return await asyncio.get_running_loop().run_in_executor(self.pool(), draw_masks,
                                                                verdicts)

    def _result(self, batch: Scored, i: int, v: Verdict, now: float) -> Result:
        d, frame = batch.items[i]
        return make_result(frame, d, v, batch.start, batch.infer_ms, now, self.worker_id)

    def _results(self, batch: Scored, verdicts: list[Verdict],
                 now: float) -> list[tuple[Delivery, Result]]:
        pairs = [(d, self._result(batch, i, v, now))
                 for i, ((d, _), v) in enumerate(zip(batch.items, verdicts, strict=True))]
        for _, res in pairs:
            self.metrics.queue_wait.observe(res.queue_ms / 1000)
        return pairs

    async def _publish_shadow(self, batch: Scored, now: float) -> None:
        if batch.shadow:
            shadow = [(batch.items[i][0].stream, self._result(batch, i, v, now))
                      for i, v in batch.shadow]
            await self.retry(lambda: self.sink.publish_shadow(shadow), "publish_shadow")

    async def _publish_results(self, pairs: list[tuple[Delivery, Result]]) -> list[Published]:
        """Publish and ack (one script call per line), keeping the window the rules read."""
        joins = [self.recipes.join_request(d.stream, res) for d, res in pairs] \
            if self.recipes is not None else []
        published = await self.retry(lambda: self.sink.publish(pairs, self._history, joins),
                                     "publish")
        self.release(d for d, _ in pairs)
        return published

    def _replay_check(self, batch: Scored, pairs: list[tuple[Delivery, Result]],
                      published: list[Published]) -> list[tuple[int, Fresh]]:
        """The results published for the first time, with their index in the batch; a replay
        (results are idempotent by camera and frame id) is counted, and a resent frame told."""
        fresh: list[tuple[int, Fresh]] = []
        for i, ((d, res), pub) in enumerate(zip(pairs, published, strict=True)):
            if pub.joined is not None and pub.joined.code in ("late", "duplicate"):
                self.metrics.part_views.labels(d.stream, pub.joined.code).inc()
            if not pub.new:
                self.stats.replayed += 1
                self.metrics.frames_replayed.labels(d.stream).inc()
                if not pub.replay_of(d.entry_id) and self._throttle.due(("resent", d.stream)):
                    # Not a redelivery: a producer sent the frame again (a retried XADD) or
                    # reuses frame ids. One result stands; say where it is.
                    log.info("frame_resent", line=d.stream, camera=res.camera,
                             frame_id=res.frame_id, entry=d.entry_id,
                             first_entry=pub.first_entry, result=pub.result_id)
                continue
            self.stats.done += 1
            self.metrics.frames_done.labels(d.stream).inc()
            self.metrics.latency.observe(max(0.0, time.time() - res.capture_ts))
            fresh.append((i, Fresh(d.stream, res, pub,
                                   batch.measures[i] if i < len(batch.measures) else None,
                                   batch.manifests.get(res.model_version))))
        return fresh

    @staticmethod
    def _frame(batch: Scored, i: int) -> tuple[Frame, Any]:
        """(frame, the CPU's decode of it or None): thumbnails and evidence reuse the decode
        (never GPU memory: alerts' evidence holds it)."""
        image = batch.images[i] if i < len(batch.images) else None
        return batch.items[i][1], (image if isinstance(image, np.ndarray) else None)

    def _thumbnails_due(self, batch: Scored, fresh: list[tuple[int, Fresh]],
                        now: float) -> list[tuple[str, Result, tuple[Frame, Any]]]:
        return [(f.line, f.result, self._frame(batch, i)) for i, f in fresh
                if self._thumb_due(f.line, f.result.camera, now)]

    def _hold_evidence(self, batch: Scored, fresh: list[tuple[int, Fresh]]) -> None:
        """Keep the last anomalous frames of each camera: the pictures an alert carries."""
        for i, f in fresh:
            if f.result.is_anomaly:
                self._recent.setdefault((f.line, f.result.camera),
                                        deque(maxlen=self._history)).append(
                    (f.result.frame_id, self._frame(batch, i), f.result.mask))

    async def _run_rules(self, fresh: list[tuple[int, Fresh]]) -> None:
        """Each rule in turn, its output emitted before the next one judges (camera health
        before the alerts, so an alert of this batch already says so)."""
        batch = [f for _, f in fresh]
        for rule in self.rules:
            out = await rule.judge(batch, self._shared)
            if out.health:
                await self._camera_health(list(out.health))
            for alert, cooldown_s in out.alerts:
                await self._alert(alert, cooldown_s)
            await self._parts(out.parts)

    async def tick(self) -> None:
        """What time alone decides (a part past its deadline): each rule's `tick`."""
        for rule in self.rules:
            if hasattr(rule, "tick"):
                await self._parts((await rule.tick(self._shared)).parts)

    async def _parts(self, verdicts: Sequence[PartVerdict]) -> None:
        """Emit part verdicts; one another worker emitted first is not counted again."""
        for v in verdicts:
            first_ms = round(v.first_ts * 1000)
            rid = await self.retry(lambda v=v, first_ms=first_ms: self.sink.emit_part(
                v, first_ms, self.s.part_done_ttl_s), "emit_part")
            if rid is None:
                continue
            self.metrics.parts.labels(v.line, v.verdict, v.outcome).inc()
            self.metrics.part_time.observe(v.total_ms / 1000)
            if v.verdict == "incomplete":
                log.warning("part_incomplete", line=v.line, part=v.part_id, missing=v.missing,
                            outcome=v.outcome, recipe=v.recipe, entry=rid)

    def _thumb_due(self, line: str, camera: str, now: float) -> bool:
        every = self.s.thumb_interval_s
        if every <= 0 or now - self._thumb_at.get((line, camera), 0.0) < every:
            return False
        self._thumb_at[(line, camera)] = now
        return True

    def _small(self, frame: tuple[Frame, Any]) -> bytes:
        """(frame, its decoded image or None) -> JPEG; reuses the decode the model needed."""
        return thumbnail(frame[0], self.s.thumb_side, self.s.thumb_max_bytes,
                         self.s.max_image_side, frame[1])

    def _start_thumbnails(self, items: list[tuple[str, Result, tuple[Frame, Any]]]) -> None:
        """Write thumbnails beside the publishing, never in its ordered chain; while one write
        is still going, new pictures are dropped (each camera is due again after the
        interval), so a slow Redis never piles them up."""
        if self._thumb_task is not None and not self._thumb_task.done():
            return
        self._thumb_task = asyncio.create_task(self._thumbnails(items), name="thumbnails")

    async def _thumbnails(self, items: list[tuple[str, Result, tuple[Frame, Any]]]) -> None:
        """Best effort: a failed write only leaves an older picture."""
        try:
            if all(f[0].encoding == "jpeg" and len(f[0].data) <= self.s.thumb_max_bytes
                   for _, _, f in items):  # kept as they came: nothing to compute
                small = [f[0].data for _, _, f in items]
            else:
                small = await asyncio.get_running_loop().run_in_executor(
                    self.pool(), lambda: [self._small(f) for _, _, f in items])
            await self.sink.thumbnails(
                [(line, res.camera, res.frame_id, res.capture_ts, data)
                 for (line, res, _), data in zip(items, small, strict=True)],
                self.s.thumb_ttl_s)
        except Exception as exc:
            if self._throttle.due(("thumb",)):
                log.warning("thumbnail_failed", error=f"{type(exc).__name__}: {exc}")

    async def _evidence(self, line: str, camera: str, frame_ids: list[str]) -> tuple:
        """(frame id, JPEG, mask) of the alert's anomalous frames this worker still holds."""
        wanted = set(frame_ids)
        kept = [x for x in self._recent.get((line, camera), ()) if x[0] in wanted]
        try:
            small = await asyncio.get_running_loop().run_in_executor(
                self.pool(), lambda: [self._small(f) for _, f, _ in kept])
        except Exception as exc:  # the alert goes out anyway, without pictures
            log.warning("evidence_failed", line=line, error=f"{type(exc).__name__}: {exc}")
            return ()
        return tuple((fid, data, mask) for (fid, _, mask), data in zip(kept, small,
                                                                       strict=True))

    async def _camera_health(self, events: list[HealthEvent]) -> None:
        announced = await self.retry(lambda: self.sink.publish_health(events), "publish_health")
        for event, new in zip(events, announced, strict=True):
            self.metrics.camera_unhealthy.labels(event.line, event.camera, event.kind).set(
                1 if event.state == "raised" else 0)
            if new:
                self.metrics.health_events.labels(event.line, event.kind, event.state).inc()
                log.warning(f"camera_health_{event.state}", line=event.line,
                            camera=event.camera, kind=event.kind, evidence=event.evidence)

    async def _alert(self, alert: Alert, cooldown_s: float) -> None:
        alert = dataclasses.replace(alert, evidence=await self._evidence(
            alert.line, alert.camera, alert.frame_ids))
        alert_id = await self.retry(lambda: self.sink.raise_alert(alert, cooldown_s),
                                    "raise_alert")
        if alert_id is not None:
            self.stats.alerts += 1
            self.metrics.alerts.labels(alert.line).inc()
            log.warning("alert_raised", line=alert.line, camera=alert.camera, rule=alert.rule,
                        frames=alert.frame_ids, scores=alert.scores, alert=alert_id)


class _Retried:
    """The result sink as rules see it (`rules.base.Shared`): each call retried through
    outages, like the publisher's own calls."""

    def __init__(self, sink: Any, retry: Callable[[Callable[[], Awaitable[T]], str],
                                                  Awaitable[T]]) -> None:
        self._sink, self._retry = sink, retry

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        call = getattr(self._sink, name)
        return lambda *a, **kw: self._retry(lambda: call(*a, **kw), name)
