"""The inference worker's run loop: frames in, batched RLR, results and alerts out.

Tasks on one asyncio loop: the reader (reads, triage by the batching policy, decoding handed
to a thread), the batcher (fill-or-timeout batches, inference on its own thread, then the
publisher), the claimer (frames dead workers left, dead-letter after N deliveries) and
housekeeping (backlog, heartbeat). Lifecycle like arq / rq: `run()` with `finally: close()`;
the first SIGTERM / SIGINT stops reading and finishes what was read; a second one, or the
grace timeout, cancels (unfinished frames stay pending for another worker).

The worker talks to Redis only through its ports (`daemon.serve.ports`): it sees
`SourceUnavailable`, never a transport's exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, NamedTuple, TypeVar

import numpy as np

from daemon import logs
from daemon.errors import FrameError, SourceUnavailable
from daemon.serve.alerts import AlertRule
from daemon.serve.batching import BatchFill, BatchPolicy
from daemon.serve.decode import Threads
from daemon.serve.engine import Engine
from daemon.serve.health import heartbeat
from daemon.serve.prometheus import WorkerMetrics
from daemon.serve.publish import Publisher, Scored, WorkerStats
from daemon.serve.serving import ServingSet
from daemon.serve.verdicts import infer_batch
from daemon.settings import Settings
from daemon.wire.backoff import Backoff
from daemon.wire.groups import Delivery
from daemon.wire.schema import DeadLetter, Frame

T = TypeVar("T")
log = logs.get("rlr.worker")


class _Item(NamedTuple):
    delivery: Delivery
    frame: Frame
    images: asyncio.Future  # decoded (S, S, 3) uint8 images or exceptions, for a chunk
    index: int  # this frame's place in that chunk


class Worker:
    """One consumer of the line(s)' group. `streams` is both FrameSource and ResultSink."""

    def __init__(self, settings: Settings, engine: Engine | None, streams: Any,
                 metrics: WorkerMetrics | None = None, watch_rollouts: Any = None) -> None:
        self.s = settings
        self.policy = BatchPolicy.from_settings(settings)
        self.serving = ServingSet(engine)  # swapped whole between batches on a rollout
        self._watch_rollouts = watch_rollouts  # builds a ModelWatcher (None: RLR_MODEL only)
        self.watcher = None
        self.io = streams
        self.metrics = metrics or WorkerMetrics()
        self.id = settings.consumer_name
        self.rule = AlertRule(settings.alert_k, settings.alert_n, settings.alert_cooldown_s)
        self.stats = WorkerStats()
        self.status = "starting"
        self.last_error: str | None = None
        self.backlogs = dict.fromkeys(settings.lines, 0)
        self.started_at = self.loop_at = time.time()
        self.threads = Threads(settings)
        self._stopping = self._reader_done = self._hard = False
        self._last_activity = time.monotonic()
        self._queue: asyncio.Queue[_Item] | None = None
        self._first_claim: asyncio.Event | None = None
        self._main: asyncio.Task | None = None
        self._held: set[tuple[str, str]] = set()  # (line, entry id) read and not yet settled
        self._model_labels: set[str] = set()
        self.publisher = Publisher(streams, settings, self.rule, self.metrics, self.stats,
                                   self.backlogs, self._retry, self._cpu_pool, self._release,
                                   self._failed)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, idle_s: float | None = None) -> WorkerStats:
        """Serve until stopped; with `idle_s`, also stop after that long with nothing to do."""
        self._main = asyncio.current_task()
        self._install_signals()
        self._queue = asyncio.Queue(self.s.prefetch_batches * self.s.batch_size)
        self._first_claim = asyncio.Event()
        try:
            await self._retry(self.io.ensure_groups, "ensure_groups")
            if self._watch_rollouts is not None:
                loop = asyncio.get_running_loop()
                self.watcher = self._watch_rollouts(
                    self.serving, lambda new: loop.call_soon_threadsafe(self._swap, new))
                self.watcher.refresh()  # a line's current rollout wins over RLR_MODEL
                self.watcher.start()
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
                await self.publisher.drain()
            finally:
                self.publisher.cancel()
                for task in helpers:
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
        self._label_models()
        log.info("models_swapped", models=new.versions(), revisions=new.revisions())

    def _label_models(self) -> None:
        for version in self.serving.versions():
            self.metrics.model.labels(version).set(1)
            self._model_labels.add(version)

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
        self._label_models()

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
        if self.watcher is not None:
            self.watcher.stop()
        self.status = "stopped"
        self.metrics.up.set(0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.io.clear_heartbeat(self.id), 2)
        self.threads.shutdown()
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
                try:
                    deliveries = await self.io.read(self.policy.read_count(self.backlogs),
                                                    self.s.block_ms)
                except SourceUnavailable as exc:
                    await self._source_down(exc, backoff)
                    continue
                self._source_up(backoff)
                if deliveries:
                    self._last_activity = time.monotonic()
                    await self._admit(deliveries)
        finally:
            self._reader_done = True

    async def _admit(self, deliveries: list[Delivery]) -> None:
        """Triage (dead letters, stale skips), then decode the fresh frames off the loop."""
        t = self.policy.triage(deliveries, self._held, self.backlogs, time.time())
        for d in t.admitted:
            self._held.add((d.line, d.entry_id))
            self.stats.read += 1
            self.metrics.frames_in.labels(d.line).inc()
        await self.publisher.skip(t.skipped)
        await self.publisher.dead_letter([self.publisher.letter(d, exc) for d, exc in t.dead])
        # One decode job per batch-sized chunk: fewer thread hand-offs than one per frame.
        loop = asyncio.get_running_loop()
        step = self.s.batch_size
        for start in range(0, len(t.fresh), step):
            chunk = t.fresh[start:start + step]
            job = loop.run_in_executor(self._cpu_pool(), self._decode_many,
                                       [frame for _, frame in chunk])
            for i, (d, frame) in enumerate(chunk):
                await self._queue.put(_Item(d, frame, job, i))

    def _cpu_pool(self) -> ThreadPoolExecutor:
        return self.threads.cpu(self.serving.primary)

    def _decode_many(self, frames: list[Frame]) -> list[np.ndarray | Exception]:
        # the primary model sets the size; other models of a rollout resize if needed
        return self.threads.decode_many(frames, self.serving.primary.image_size)

    def _failed(self, error: str) -> None:
        self.last_error = error

    def _release(self, items: Iterable[Delivery]) -> None:
        for d in items:
            self._held.discard((d.line, d.entry_id))

    # ------------------------------------------------------------------ batching

    async def _batcher(self, idle_s: float | None) -> None:
        while True:
            self.loop_at = time.time()
            if self._stopping and self._reader_done and self._queue.empty():
                return
            try:
                first = await asyncio.wait_for(self._queue.get(), 0.1)
            except asyncio.TimeoutError:
                if idle_s is not None and not self._stopping and \
                        time.monotonic() - self._last_activity > idle_s:
                    self.request_stop()  # once: a second call would cancel, not drain
                continue
            fill = BatchFill(self.s.batch_size, self.policy.wait_s, time.monotonic(), [first])
            while not fill.closed(time.monotonic()):
                if not self._queue.empty():
                    fill.add(self._queue.get_nowait())
                    continue
                try:
                    fill.add(await asyncio.wait_for(self._queue.get(),
                                                    fill.remaining(time.monotonic())))
                except asyncio.TimeoutError:
                    break
            t_full = time.monotonic()
            await self._process(fill.items)
            self._last_activity = time.monotonic()
            log.debug("batch_done", n=len(fill.items),
                      fill_ms=round((t_full - fill.started) * 1000, 2),
                      process_ms=round((self._last_activity - t_full) * 1000, 2),
                      queued=self._queue.qsize())

    async def _process(self, batch: list[_Item]) -> None:
        start, now = time.time(), time.time()
        # Frames can go stale while queued, too: a live line wants the newest frames.
        stale = [self.policy.is_stale(self.backlogs.get(it.delivery.line, 0), it.frame.ts, now)
                 for it in batch]
        if any(stale):
            pairs = list(zip(batch, stale, strict=True))
            await self.publisher.skip([it.delivery for it, old in pairs if old])
            batch = [it for it, old in pairs if not old]
        good, dead = [], []
        for item in batch:
            image = (await item.images)[item.index]
            if isinstance(image, FrameError):
                dead.append(self.publisher.letter(item.delivery, image))
            elif isinstance(image, Exception):  # a decoder bug must not take the worker down
                dead.append(self.publisher.letter(item.delivery, FrameError(
                    "corrupt", f"decoding failed ({type(image).__name__}: {image})")))
            else:
                good.append((item, image))
        await self.publisher.dead_letter(dead)
        if not good:
            return
        serving = self.serving  # one snapshot per batch: a swap lands between batches
        items = [(item.delivery, item.frame) for item, _ in good]
        try:
            verdicts, shadow, infer_ms = await asyncio.get_running_loop().run_in_executor(
                self.threads.infer, infer_batch, serving, [d.line for d, _ in items],
                [f for _, f in items], [img for _, img in good], self.s.masks)
        except Exception as exc:
            # Left unacknowledged: another delivery retries it, and after
            # RLR_MAX_DELIVERIES it is dead-lettered instead of blocking the line.
            self.last_error = f"inference failed: {type(exc).__name__}: {exc}"
            log.error("inference_failed", n=len(good), error=self.last_error)
            self._release(d for d, _ in items)  # let the claimer retry them
            return
        self.stats.batches += 1
        self.metrics.batch_size.observe(len(good))
        self.metrics.inference.observe(infer_ms / 1000)
        await self.publisher.submit(Scored(items, verdicts, shadow, start, infer_ms))

    # ------------------------------------------------------------------ recovery

    async def _claimer(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            try:
                claimed = await self.io.claim_stale(self.s.claim_idle_ms,
                                                    max(4 * self.s.batch_size, 100))
            except SourceUnavailable as exc:
                await self._source_down(exc, backoff)
                continue
            self._source_up(backoff)
            self._first_claim.set()
            if claimed.trimmed:
                await self.publisher.dead_letter([(d, d.line, DeadLetter(
                    d.entry_id, "trimmed", "the frame was trimmed from the stream (MAXLEN cap, "
                    "RLR_FRAMES_MAXLEN) before any worker finished it; raise the cap or add "
                    "workers", self.id, time.time(), d.deliveries)) for d in claimed.trimmed])
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
                with contextlib.suppress(SourceUnavailable):
                    self.backlogs[line] = await self.io.backlog(line)
                    self.metrics.pending.labels(line).set(self.backlogs[line])
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.s.heartbeat_s
                with contextlib.suppress(SourceUnavailable):
                    await self.io.heartbeat(self.id, self.health(), self.s.heartbeat_ttl_s)
            await asyncio.sleep(min(0.5, self.s.heartbeat_s))

    def health(self) -> dict:
        """The heartbeat (`daemon.wire.heartbeat` reads and judges it)."""
        return heartbeat(self)

    # ------------------------------------------------------------------ outages

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Retry `call` through outages of the ports; only cancellation ends it."""
        backoff = Backoff()
        while True:
            try:
                result = await call()
            except SourceUnavailable as exc:
                await self._source_down(exc, backoff, what)
                continue
            self._source_up(backoff)
            return result

    async def _source_down(self, exc: Exception, backoff: Backoff, what: str = "read") -> None:
        if self.status != "redis_unavailable":
            log.error("redis_unavailable", during=what, error=str(exc))
        self.status = "redis_unavailable"
        self.last_error = f"redis: {exc}"
        self._last_activity = time.monotonic()  # an outage is not idleness
        await backoff.asleep()

    def _source_up(self, backoff: Backoff) -> None:
        backoff.reset()
        if self.status == "redis_unavailable":
            self.status = "draining" if self._stopping else "ready"
            log.info("redis_reconnected")

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            await asyncio.sleep(min(0.1, end - time.monotonic()))
