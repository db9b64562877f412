"""The inference worker: frames in, batched RLR, results and alerts out.

Tasks on one asyncio loop: the reader (XREADGROUP, triage, decoding handed to a thread
pool), the batcher (dynamic batches, inference on its own thread, publish + ack), the claimer
(XAUTOCLAIM of frames dead workers left, dead-letter after N deliveries) and housekeeping
(backlog, heartbeat). Lifecycle like arq / rq: `run()` with `finally: close()`; the first
SIGTERM / SIGINT stops reading and finishes what was read; a second one, or the grace
timeout, cancels (unfinished frames stay pending for another worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np

from daemon import logs
from daemon.alerts import AlertRule
from daemon.engine import Engine
from daemon.errors import FrameError
from daemon.metrics import WorkerMetrics
from daemon.ports import Delivery
from daemon.redis_conn import TRANSIENT, Backoff
from daemon.schema import (
    DeadLetter,
    Frame,
    Result,
    decode_frame,
    keep_for_dead_letter,
    parse_frame,
)
from daemon.scoring import Verdict, draw_masks, infer_batch, make_result
from daemon.serving import ServingSet
from daemon.settings import Settings

T = TypeVar("T")
_PUBLISHERS = 2  # batches published concurrently while the next one is inferred
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


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class _Item(NamedTuple):
    delivery: Delivery
    frame: Frame
    images: asyncio.Future  # list of decoded (S, S, 3) uint8 images or exceptions, per chunk
    index: int  # this frame's place in that list


class Worker:
    """One consumer of the line(s)' group. `streams` is both FrameSource and ResultSink."""

    def __init__(self, settings: Settings, engine: Engine | None, streams: Any,
                 metrics: WorkerMetrics | None = None, watch_rollouts: Any = None) -> None:
        self.s = settings
        self.serving = ServingSet(engine)  # swapped whole between batches on a rollout
        self._watch_rollouts = watch_rollouts  # builds a ModelWatcher (None: RLR_MODEL only)
        self._watcher = None
        self.io = streams
        self.metrics = metrics or WorkerMetrics()
        self.id = settings.consumer_name
        self.rule = AlertRule(settings.alert_k, settings.alert_n, settings.alert_cooldown_s)
        self.stats = WorkerStats()
        self.status = "starting"
        self.last_error: str | None = None
        self.backlogs = dict.fromkeys(settings.lines, 0)
        self.started_at = time.time()
        self.loop_at = time.time()
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, "rlr-decode")
        self._infer_pool = ThreadPoolExecutor(1, "rlr-infer")
        self._stopping = False
        self._reader_done = False
        self._last_activity = time.monotonic()
        self._queue: asyncio.Queue[_Item] | None = None
        self._first_claim: asyncio.Event | None = None
        self._main: asyncio.Task | None = None
        self._hard = False
        self._publishing: set[asyncio.Task] = set()
        self._held: set[tuple[str, str]] = set()  # (line, entry id) read and not yet settled
        self._model_labels: set[str] = set()
        self._last_publish: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, idle_s: float | None = None) -> WorkerStats:
        """Serve until stopped; with `idle_s`, also stop after that long with nothing to do."""
        self._main = asyncio.current_task()
        self._install_signals()
        self._queue = asyncio.Queue(self.s.prefetch_batches * self.s.batch_size)
        self._publish_slots = asyncio.Semaphore(_PUBLISHERS)
        self._first_claim = asyncio.Event()
        try:
            await self._retry(self.io.ensure_groups, "ensure_groups")
            if self._watch_rollouts is not None:
                loop = asyncio.get_running_loop()
                self._watcher = self._watch_rollouts(
                    self.serving, lambda new: loop.call_soon_threadsafe(self._swap, new))
                self._watcher.refresh()  # a line's current rollout wins over RLR_MODEL
                self._watcher.start()
            await self._wait_for_model()
            self.status = "ready"
            self.metrics.up.set(1)
            primary = self.serving.primary
            log.info("worker_ready", worker=self.id, lines=self.s.lines, group=self.s.group,
                     models=self.serving.versions(), device=str(primary.device),
                     batch_size=self.s.batch_size, calibrated=primary.calibrated)
            helpers = [asyncio.create_task(c()) for c in
                       (self._reader, self._claimer, self._housekeeping)]
            try:
                await self._batcher(idle_s)
                await self._drain_publishing()
            finally:
                for task in [*helpers, *self._publishing]:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
        except asyncio.CancelledError:
            if not self._hard:
                raise
            log.warning("worker_cancelled", worker=self.id,
                        note="frames in flight stay pending for another worker")
        finally:
            await self.close()
        return self.stats

    def _swap(self, new: ServingSet) -> None:
        """On the event loop, between batches: the next batch uses the new models."""
        old = set(self.serving.versions())
        self.serving = new
        for version in old - set(new.versions()):
            if version in self._model_labels:
                self.metrics.model.remove(version)
                self._model_labels.discard(version)
        for version in new.versions():
            self.metrics.model.labels(version).set(1)
            self._model_labels.add(version)
        log.info("models_swapped", models=new.versions(), revisions=new.revisions())

    async def _wait_for_model(self) -> None:
        """With no RLR_MODEL and no rollout yet, wait for `rlrctl deploy` (heartbeat says so)."""
        if self.serving.primary is None:
            self.status = "waiting_for_model"
            log.warning("waiting_for_model", lines=self.s.lines,
                        note="set RLR_MODEL or `rlrctl deploy MODEL --line LINE`")
            beat = asyncio.create_task(self._housekeeping())
            try:
                while self.serving.primary is None and not self._stopping:
                    self.loop_at = time.time()  # alive, just idle: liveness probes pass
                    await asyncio.sleep(0.2)
            finally:
                beat.cancel()
        for version in self.serving.versions():
            self.metrics.model.labels(version).set(1)
            self._model_labels.add(version)

    async def run_until_idle(self, idle_s: float = 1.0, timeout_s: float = 120.0) -> WorkerStats:
        """Bounded run for tests and batch jobs: returns once idle for `idle_s`."""
        return await asyncio.wait_for(self.run(idle_s=idle_s), timeout_s)

    @property
    def hard_stopped(self) -> bool:
        """True when the run was cancelled (second signal or grace timeout), not drained."""
        return self._hard

    def request_stop(self) -> None:
        """First call: drain and stop. Second call: cancel at once."""
        if not self._stopping:
            self._stopping = True
            self.status = "draining"
            log.info("shutdown_requested", worker=self.id, grace_s=self.s.shutdown_grace_s)
            asyncio.get_running_loop().call_later(self.s.shutdown_grace_s, self._cancel)
        else:
            self._cancel()

    def _cancel(self) -> None:
        if self._main is not None and not self._main.done():
            self._hard = True
            self._main.cancel()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        self.status = "stopped"
        self.metrics.up.set(0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.io.clear_heartbeat(self.id), 2)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._infer_pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            await self.io.close()
        log.info("worker_stopped", worker=self.id, **asdict(self.stats))

    # ------------------------------------------------------------------ reading

    async def _reader(self) -> None:
        backoff = Backoff()
        try:
            # The claimer's first pass recovers what this consumer name left pending last
            # time; reading new frames before it would make those look like our own backlog.
            await self._first_claim.wait()
            while not self._stopping:
                over = any(b > self.s.backlog_limit for b in self.backlogs.values())
                count = max(self.s.batch_size, 256) if over else self.s.batch_size
                try:
                    deliveries = await self.io.read(count, self.s.block_ms)
                except TRANSIENT as exc:
                    await self._redis_down(exc, backoff)
                    continue
                self._redis_up(backoff)
                if deliveries:
                    self._last_activity = time.monotonic()
                    await self._admit(deliveries)
        finally:
            self._reader_done = True

    async def _admit(self, deliveries: list[Delivery]) -> None:
        """Triage: dead-letter what cannot be a frame, skip stale frames, decode the rest."""
        dead, skipped, fresh = [], [], []
        for d in deliveries:
            if (d.line, d.entry_id) in self._held:
                continue  # our own frame, still queued: XAUTOCLAIM saw it idle, it is not lost
            self._held.add((d.line, d.entry_id))
            self.stats.read += 1
            self.metrics.frames_in.labels(d.line).inc()
            if d.deliveries > self.s.max_deliveries:
                dead.append(self._letter(d, FrameError(
                    "too_many_deliveries", f"delivered {d.deliveries} times without a result "
                    f"(limit RLR_MAX_DELIVERIES={self.s.max_deliveries}): workers crashed or "
                    "inference failed on it; see the worker logs")))
                continue
            try:
                frame = parse_frame(d.fields, self.s.max_payload_bytes)
            except FrameError as exc:
                dead.append(self._letter(d, exc))
                continue
            if self._stale(d.line, frame.ts):
                skipped.append(d)
                continue
            fresh.append((d, frame))
        await self._skip(skipped)
        await self._dead_letter(dead)
        # One decode job per batch-sized chunk: fewer thread hand-offs than one per frame.
        loop = asyncio.get_running_loop()
        step = self.s.batch_size
        for start in range(0, len(fresh), step):
            chunk = fresh[start:start + step]
            job = loop.run_in_executor(self._cpu_pool(), self._decode_many,
                                       [frame for _, frame in chunk])
            for i, (d, frame) in enumerate(chunk):
                await self._queue.put(_Item(d, frame, job, i))

    def _cpu_pool(self) -> ThreadPoolExecutor:
        """Where decoding and mask drawing run. With the model on a GPU: their own threads,
        overlapping inference. With the model on the CPU: the inference thread, between
        batches; decoding beside CPU inference costs the model more (its parallel ops wait
        for a preempted thread) than decoding takes (measured: 15 % vs 2 % with `lite`)."""
        if self.s.decode_inline == "auto":
            primary = self.serving.primary
            inline = primary is None or primary.device.type == "cpu"
        else:
            inline = self.s.decode_inline == "yes"
        return self._infer_pool if inline else self._decode_pool

    def _stale(self, line: str, ts: float) -> bool:
        """Skip rule: the line's backlog is over its bound and the frame is too old."""
        return self.backlogs.get(line, 0) > self.s.backlog_limit and \
            time.time() - ts > self.s.max_frame_age_s

    def _decode_many(self, frames: list[Frame]) -> list[np.ndarray | Exception]:
        size = self.serving.primary.image_size  # other models of a rollout resize if needed
        out: list[np.ndarray | Exception] = []
        for frame in frames:
            try:
                out.append(decode_frame(frame, size, self.s.max_image_side))
            except Exception as exc:  # reported per frame by the batcher
                out.append(exc)
        return out

    async def _skip(self, items: list[Delivery]) -> None:
        by_line: dict[str, list[Delivery]] = {}
        for d in items:
            by_line.setdefault(d.line, []).append(d)
        for line, group in by_line.items():
            # count what this ack settled, so a redelivered frame is never counted twice
            n = await self._retry(lambda group=group: self.io.ack(group), "ack_skipped")
            if n:
                await self._retry(lambda line=line, n=n: self.io.count(line, "skipped", n),
                                  "count")
            self.metrics.frames_skipped.labels(line).inc(n)
            self.stats.skipped += n
            log.warning("frames_skipped", line=line, n=n, backlog=self.backlogs.get(line),
                        backlog_limit=self.s.backlog_limit, max_age_s=self.s.max_frame_age_s)
        self._release(items)

    def _release(self, items) -> None:
        for d in items:
            self._held.discard((d.line, d.entry_id))

    def _letter(self, d: Delivery, exc: FrameError) -> tuple[Delivery, str, DeadLetter]:
        kept = keep_for_dead_letter(d.fields, self.s.max_payload_bytes)
        letter = DeadLetter(d.entry_id, exc.reason, exc.detail, self.id, time.time(),
                            d.deliveries, "frame", kept)
        return d, d.line, letter

    async def _dead_letter(self, items: list[tuple[Delivery | None, str, DeadLetter]]) -> None:
        if not items:
            return
        await self._retry(lambda: self.io.dead_letter(items), "dead_letter")
        self._release(d for d, _, _ in items if d is not None)
        for _, line, letter in items:
            self.metrics.frames_dead.labels(line, letter.reason).inc()
            log.warning("frame_dead_lettered", line=line, entry=letter.source_id,
                        reason=letter.reason, detail=letter.detail,
                        camera=_text(letter.original.get("camera")))
        self.stats.dead_lettered += len(items)

    # ------------------------------------------------------------------ batching

    async def _batcher(self, idle_s: float | None) -> None:
        wait = self.s.batch_wait_ms / 1000
        while True:
            self.loop_at = time.time()
            if self._stopping and self._reader_done and self._queue.empty():
                return
            try:
                first = await asyncio.wait_for(self._queue.get(), 0.1)
            except asyncio.TimeoutError:
                if idle_s is not None and time.monotonic() - self._last_activity > idle_s:
                    self.request_stop()
                continue
            t_first = time.monotonic()
            batch = [first]
            deadline = t_first + wait
            while len(batch) < self.s.batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            t_full = time.monotonic()
            await self._process(batch)
            self._last_activity = time.monotonic()
            log.debug("batch_done", n=len(batch), fill_ms=round((t_full - t_first) * 1000, 2),
                      process_ms=round((self._last_activity - t_full) * 1000, 2),
                      queued=self._queue.qsize())

    async def _process(self, batch: list[_Item]) -> None:
        start = time.time()
        t0 = time.monotonic()
        # Frames can go stale while queued, too: a live line wants the newest frames.
        stale = [self._stale(it.delivery.line, it.frame.ts) for it in batch]
        if any(stale):
            await self._skip([it.delivery for it, old in zip(batch, stale, strict=True) if old])
            batch = [it for it, old in zip(batch, stale, strict=True) if not old]
        good, dead = [], []
        for item in batch:
            image = (await item.images)[item.index]
            if isinstance(image, FrameError):
                dead.append(self._letter(item.delivery, image))
            elif isinstance(image, Exception):  # a decoder bug must not take the worker down
                dead.append(self._letter(item.delivery, FrameError(
                    "corrupt", f"decoding failed ({type(image).__name__}: {image})")))
            else:
                good.append((item, image))
        await self._dead_letter(dead)
        if not good:
            return
        serving = self.serving  # one snapshot per batch: a swap lands between batches
        lines = [item.delivery.line for item, _ in good]
        frames = [item.frame for item, _ in good]
        t_decoded = time.monotonic()
        try:
            outputs, shadow, infer_ms = await asyncio.get_running_loop().run_in_executor(
                self._infer_pool, self._infer, serving, lines, frames, [img for _, img in good])
        except Exception as exc:
            # Left unacknowledged: another delivery retries it, and after
            # RLR_MAX_DELIVERIES it is dead-lettered instead of blocking the line.
            self.last_error = f"inference failed: {type(exc).__name__}: {exc}"
            log.error("inference_failed", n=len(good), error=self.last_error)
            self._release(item.delivery for item, _ in good)  # let the claimer retry them
            return
        t_inferred = time.monotonic()
        log.debug("batch_timing", decode_wait_ms=round((t_decoded - t0) * 1000, 2),
                  infer_wall_ms=round((t_inferred - t_decoded) * 1000, 2),
                  infer_ms=round(infer_ms, 2))
        self.stats.batches += 1
        self.metrics.batch_size.observe(len(good))
        self.metrics.inference.observe(infer_ms / 1000)
        # Publishing overlaps the next batch's inference: the model never waits for Redis.
        # At most `_PUBLISHERS` batches are being published at once (bounded memory).
        await self._publish_slots.acquire()
        task = asyncio.create_task(self._publish(good, outputs, shadow, start, infer_ms,
                                                 self._last_publish))
        self._last_publish = task
        self._publishing.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task) -> None:
        self._publishing.discard(task)
        self._publish_slots.release()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.last_error = f"publish failed: {type(exc).__name__}: {exc}"
            log.error("publish_failed", error=self.last_error)

    async def _drain_publishing(self) -> None:
        if self._publishing:
            await asyncio.gather(*list(self._publishing), return_exceptions=True)

    def _infer(self, serving: ServingSet, lines: list[str], frames: list[Frame],
               images: list[np.ndarray]):
        return infer_batch(serving, lines, frames, images, self.s.masks)

    async def _publish(self, good, outputs, shadow, start: float, infer_ms: float,
                       previous: asyncio.Task | None) -> None:
        if any(v.mask is not None for v in outputs):
            outputs = await asyncio.get_running_loop().run_in_executor(
                self._cpu_pool(), draw_masks, outputs)
        if previous is not None:  # results leave in batch order (a model switch is one point)
            await asyncio.gather(previous, return_exceptions=True)
        now = time.time()
        pairs = []
        for (item, _), out in zip(good, outputs, strict=True):
            pairs.append((item.delivery, self._result(item, out, start, infer_ms, now)))
            self.metrics.queue_wait.observe(pairs[-1][1].queue_ms / 1000)
        if shadow:
            await self._retry(lambda: self.io.publish_shadow(
                [(good[i][0].delivery.line, self._result(good[i][0], out, start, infer_ms, now))
                 for i, out in shadow]), "publish_shadow")
        published = await self._retry(lambda: self.io.publish(pairs, self.rule.n), "publish")
        self._release(d for d, _ in pairs)
        for (d, res), pub in zip(pairs, published, strict=True):
            if not pub.new:
                self.stats.replayed += 1
                self.metrics.frames_replayed.labels(d.line).inc()
                continue
            self.stats.done += 1
            self.metrics.frames_done.labels(d.line).inc()
            self.metrics.latency.observe(max(0.0, time.time() - res.capture_ts))
            if res.is_anomaly and self.rule.triggered(pub.window):
                await self._alert(d.line, res, pub.window)

    def _result(self, item: _Item, out: Verdict, start: float, infer_ms: float,
                now: float) -> Result:
        return make_result(item.frame, item.delivery, out, start, infer_ms, now, self.id)

    async def _alert(self, line: str, res: Result, window) -> None:
        alert = self.rule.build(line, res.camera, window, time.time(), res.model_version,
                                res.threshold, res.product_class)
        alert_id = await self._retry(
            lambda: self.io.raise_alert(alert, self.rule.cooldown_s), "raise_alert")
        if alert_id is not None:
            self.stats.alerts += 1
            self.metrics.alerts.labels(line).inc()
            log.warning("alert_raised", line=line, camera=res.camera, rule=alert.rule,
                        frames=alert.frame_ids, scores=alert.scores, alert=alert_id)

    # ------------------------------------------------------------------ recovery

    async def _claimer(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            try:
                claimed = await self.io.claim_stale(self.s.claim_idle_ms,
                                                    max(4 * self.s.batch_size, 100))
            except TRANSIENT as exc:
                await self._redis_down(exc, backoff)
                continue
            self._redis_up(backoff)
            self._first_claim.set()
            if claimed.trimmed:
                await self._dead_letter([(None, line, DeadLetter(
                    eid, "trimmed", "the frame was trimmed from the stream (MAXLEN cap, "
                    "RLR_FRAMES_MAXLEN) before any worker finished it; raise the cap or add "
                    "workers", self.id, time.time(), 0)) for line, eid in claimed.trimmed])
            if claimed.deliveries:
                self._last_activity = time.monotonic()
                log.info("frames_claimed", n=len(claimed.deliveries),
                         entries=[d.entry_id for d in claimed.deliveries[:10]])
                await self._admit(claimed.deliveries)
            await self._sleep(self.s.claim_interval_s)

    async def _housekeeping(self) -> None:
        next_beat = 0.0
        while True:
            for line in self.s.lines:
                with contextlib.suppress(*TRANSIENT):
                    self.backlogs[line] = await self.io.backlog(line)
                    self.metrics.pending.labels(line).set(self.backlogs[line])
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.s.heartbeat_s
                with contextlib.suppress(*TRANSIENT):
                    await self.io.heartbeat(self.id, self.health(), self.s.heartbeat_ttl_s)
            await asyncio.sleep(min(0.5, self.s.heartbeat_s))

    def health(self) -> dict:
        primary = self.serving.primary
        return {"worker": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                "status": self.status, "lines": self.s.lines, "group": self.s.group,
                "model_version": None if primary is None else primary.version,
                "device": None if primary is None else str(primary.device),
                "models": self.serving.versions(), "rollouts": self.serving.revisions(),
                "model_errors": {} if self._watcher is None else dict(self._watcher.errors),
                "started_at": self.started_at, "updated_at": time.time(),
                "loop_at": self.loop_at, "stall_s": self.s.stall_s,
                "backlog": self.backlogs, "last_error": self.last_error, **asdict(self.stats)}

    # ------------------------------------------------------------------ Redis outages

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Retry `call` through Redis outages; only cancellation ends it."""
        backoff = Backoff()
        while True:
            try:
                result = await call()
            except TRANSIENT as exc:
                await self._redis_down(exc, backoff, what)
                continue
            self._redis_up(backoff)
            return result

    async def _redis_down(self, exc: Exception, backoff: Backoff, what: str = "read") -> None:
        if self.status != "redis_unavailable":
            log.error("redis_unavailable", during=what, error=f"{type(exc).__name__}: {exc}")
        self.status = "redis_unavailable"
        self.last_error = f"redis: {exc}"
        self._last_activity = time.monotonic()  # an outage is not idleness
        await backoff.asleep()

    def _redis_up(self, backoff: Backoff) -> None:
        backoff.reset()
        if self.status == "redis_unavailable":
            self.status = "draining" if self._stopping else "ready"
            log.info("redis_reconnected")

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            await asyncio.sleep(min(0.1, end - time.monotonic()))
