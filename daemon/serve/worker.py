"""The inference worker's run loop: frames in, batched RLR, results and alerts out.

Tasks on one asyncio loop, each under the process's `Supervisor` (one that fails is logged,
restarted with backoff and makes the worker `degraded`; one that keeps failing stops the
process non-zero): the reader (reads, triage by the batching policy, decoding and camera
measures on a thread), the batcher (fill-or-timeout batches, inference on its thread, then the
publisher), the claimer (frames dead workers left), the backlog poll and the heartbeat; when
following rollouts, two supervised threads of the `ModelWatcher`. With no model the worker
reads nothing and waits (`waiting_for_model`). Lifecycle like arq / rq: `run()` with
`finally: close()`; the first SIGTERM / SIGINT stops reading and finishes what was read; a
second one, or the grace timeout, cancels (unfinished frames stay pending for another
worker). The worker talks to Redis only through its ports (`daemon.serve.ports`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, NamedTuple

from daemon import logs
from daemon.errors import FrameError, SourceUnavailable, TaskFailed
from daemon.serve.batching import BatchFill, BatchPolicy
from daemon.serve.cameras import CameraMonitor
from daemon.serve.decode import Threads
from daemon.serve.inflight import keep_held
from daemon.serve.liveness import announce, heartbeat, worker_status
from daemon.serve.outage import Outages
from daemon.serve.prometheus import WorkerMetrics
from daemon.serve.publish import Publisher, Scored, WorkerStats
from daemon.serve.recipes import LineRecipes
from daemon.serve.rules.alerts import AlertRule
from daemon.serve.rules.registry import build_rules
from daemon.serve.served_model import ServedModel
from daemon.serve.serving import ServingSet
from daemon.serve.settings import WorkerSettings
from daemon.serve.upkeep import backlog_loop, heartbeat_loop, read_recipes, stations_loop
from daemon.serve.verdicts import infer_batch
from daemon.supervisor import Supervisor
from daemon.wire.backoff import Backoff
from daemon.wire.groups import Delivery
from daemon.wire.schema import Frame

log = logs.get("rlr.worker")


class _Item(NamedTuple):
    delivery: Delivery
    frame: Frame
    images: asyncio.Future  # decoded (S, S, 3) uint8 images or exceptions, for a chunk
    index: int  # this frame's place in that chunk


class Worker:
    """One consumer of the line(s)' group. `streams` is both FrameSource and ResultSink."""

    def __init__(self, settings: WorkerSettings, served: ServedModel | None, streams: Any,
                 metrics: WorkerMetrics | None = None, watch_rollouts: Any = None) -> None:
        self.s = settings
        self.policy = BatchPolicy(settings)
        self.serving = ServingSet(served)  # swapped whole between batches on a rollout
        self._watch_rollouts = watch_rollouts  # builds a ModelWatcher (None: RLR_MODEL only)
        self.watcher = None
        self.io = streams
        self.metrics = metrics or WorkerMetrics()
        self.id = settings.consumer_name
        self.rule = AlertRule(settings)
        self.stats = WorkerStats()
        self.phase = "starting"  # starting, running, draining, stopped; see `status`
        self.fatal: TaskFailed | None = None
        self.backlogs = dict.fromkeys(settings.lines, 0)
        self.started_at = self.loop_at = time.time()
        self.threads = Threads(settings)
        self.supervisor = Supervisor(f"worker {self.id}", max_failures=settings.task_max_failures,
                                     window_s=settings.task_failure_window_s,
                                     on_fatal=self._on_fatal)
        self.outages = Outages(on_wait=self._active, on_error=self._failed)
        self.cameras = CameraMonitor(settings, self.metrics)
        self.recipes = LineRecipes(settings, settings.lines)
        self._stopping = self._reader_done = self._hard = False
        self._last_activity = time.monotonic()
        self._queue: asyncio.Queue[_Item] | None = None
        self._first_claim: asyncio.Event | None = None
        self._main: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: set[tuple[str, str]] = set()  # (line, entry id) read and not yet settled
        self._errors: list[str] = []
        self.publisher = Publisher(streams, settings, build_rules(
            self.id, self.rule, self.cameras, settings.lines), self.metrics, self.stats,
            self.backlogs, self.outages.retry, self._cpu_pool, self._release, self._failed,
            self.supervisor, recipes=self.recipes)

    @property
    def status(self) -> str:
        return worker_status(self)

    @property
    def last_error(self) -> str | None:
        return self._errors[-1] if self._errors else None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, idle_s: float | None = None) -> WorkerStats:
        """Serve until stopped; with `idle_s`, also stop after that long with nothing to do."""
        self._main, self._loop = asyncio.current_task(), asyncio.get_running_loop()
        self._install_signals()
        self._queue = asyncio.Queue(self.s.prefetch_batches * self.s.batch_size)
        self._first_claim = asyncio.Event()
        spawn = self.supervisor.spawn
        tasks = [spawn("heartbeat", lambda: heartbeat_loop(self))]
        try:
            self._follow_rollouts()
            await read_recipes(self)  # before the first frame is placed
            self.phase = "running"
            self.metrics.show_models(self.serving.versions(), self.serving.primary is not None)
            announce(self)
            tasks += [spawn("backlog", lambda: backlog_loop(self)),
                      spawn("stations", lambda: stations_loop(self)),
                      spawn("claimer", self._claimer), spawn("reader", self._reader),
                      spawn("inflight", lambda: keep_held(self))]
            await spawn("batcher", lambda: self._batcher(idle_s))
            await self.publisher.drain()
        except asyncio.CancelledError:
            if not self._hard:
                raise
            log.warning("worker_cancelled", worker=self.id,
                        note="frames in flight stay pending for another worker")
        finally:
            self.supervisor.stop()
            self.publisher.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.close()
        return self.stats

    def _follow_rollouts(self) -> None:
        if self._watch_rollouts is None:
            return
        loop = self._loop
        self.watcher = self._watch_rollouts(
            self.serving, lambda new: loop.call_soon_threadsafe(self._swap, new))
        self.watcher.beat = self.supervisor.beat
        try:
            self.watcher.refresh()  # a line's current rollout wins over RLR_MODEL
        except Exception as exc:  # the supervised poll below retries and reports it
            log.warning("rollout_check_failed", error=f"{type(exc).__name__}: {exc}")
        self.supervisor.thread("rollouts", self.watcher.poll, self.watcher.stopped)
        self.supervisor.thread("rollout_notify", self.watcher.listen, self.watcher.stopped)

    def _swap(self, new: ServingSet) -> None:
        """On the event loop, between batches: the next batch uses the new models."""
        had_model = self.serving.primary is not None
        self.serving = new
        self.metrics.show_models(new.versions(), new.primary is not None)
        log.info("models_swapped", models=new.versions(), revisions=new.revisions())
        if had_model != (new.primary is not None):
            announce(self)

    async def run_until_idle(self, idle_s: float = 1.0, timeout_s: float = 120.0) -> WorkerStats:
        """Bounded run for tests and batch jobs: returns once idle for `idle_s`."""
        return await asyncio.wait_for(self.run(idle_s=idle_s), timeout_s)

    @property
    def hard_stopped(self) -> bool:
        """True when the run was cancelled (second signal, grace timeout, a task that kept
        failing), not drained."""
        return self._hard

    def request_stop(self) -> None:
        """First call: drain and stop. Second call: cancel at once."""
        if not self._stopping:
            self._stopping = True
            self.supervisor.stop()  # tasks that end now are done, not failed
            self.phase = "draining"
            log.info("shutdown_requested", worker=self.id, grace_s=self.s.shutdown_grace_s)
            asyncio.get_running_loop().call_later(self.s.shutdown_grace_s, self._cancel)
        else:
            self._cancel()

    def _cancel(self) -> None:
        if self._main is not None and not self._main.done():
            self._hard = True
            self._main.cancel()

    def _on_fatal(self, exc: TaskFailed) -> None:
        """A task kept failing (any thread): stop at once; `rlrctl worker` exits non-zero."""
        self.fatal = exc
        self._failed(str(exc))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.phase = "stopped"
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
            await self.outages.retry(self.io.ensure_groups, "ensure_groups")
            # The claimer's first pass recovers what this consumer name left pending last
            # time; reading new frames before it would make those look like our own backlog.
            await self._first_claim.wait()
            while not self._stopping:
                if self.serving.primary is None:  # nothing to score with: leave them queued
                    await asyncio.sleep(0.2)
                    continue
                try:
                    deliveries = await self.io.read(self.policy.read_count(self.backlogs),
                                                    self.s.block_ms)
                except SourceUnavailable as exc:
                    await self.outages.down(exc, backoff)
                    continue
                self.outages.up(backoff)
                self.supervisor.beat("reader")
                if deliveries:
                    self._active()
                    await self._admit(deliveries)
        finally:
            self._reader_done = True

    async def _admit(self, deliveries: list[Delivery]) -> None:
        """Triage (dead letters, stale skips), then decode the fresh frames off the loop."""
        t = self.policy.triage(deliveries, self._held, self.backlogs, time.time())
        for d in t.admitted:
            self._held.add((d.stream, d.entry_id))
            self.stats.read += 1
            self.metrics.frames_in.labels(d.stream).inc()
        await self.publisher.skip(t.skipped)
        fresh, wrong = self.recipes.place_all(t.fresh)  # class and view as the recipe says
        await self.publisher.dead_letter([self.publisher.letter(d, exc)
                                          for d, exc in [*t.dead, *wrong]])
        primary = self.serving.primary  # sets the decode size; other models resize
        if primary is None:  # the model went away meanwhile: leave them for a redelivery
            self._release(d for d, _ in fresh)
            return
        size, device = primary.image_size, self.threads.device(primary)
        loop = asyncio.get_running_loop()
        step = self.s.batch_size
        for start in range(0, len(fresh), step):  # one decode job per batch-sized chunk
            chunk = fresh[start:start + step]
            job = loop.run_in_executor(self._cpu_pool(), self.threads.decode_many,
                                       [f for _, f in chunk], size, self.cameras.measurer(
                                           [d.stream for d, _ in chunk]), device)
            for i, (d, frame) in enumerate(chunk):
                await self._queue.put(_Item(d, frame, job, i))

    def _cpu_pool(self) -> ThreadPoolExecutor:
        return self.threads.cpu(self.serving.primary)

    def _active(self) -> None:
        self._last_activity = time.monotonic()

    def _failed(self, error: str) -> None:
        if not self._errors or self._errors[-1] != error:
            self._errors = [*self._errors[-9:], error]

    def _release(self, items: Iterable[Delivery]) -> None:
        for d in items:
            self._held.discard((d.stream, d.entry_id))

    # ------------------------------------------------------------------ batching

    async def _batcher(self, idle_s: float | None) -> None:
        while True:
            self.loop_at = time.time()
            self.supervisor.beat("batcher")
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
            try:
                await self._process(fill.items)
            except Exception:
                # Whatever broke, the batch's frames must not stay held here forever: a
                # redelivery retries them (or dead-letters them after RLR_MAX_DELIVERIES).
                self._release(it.delivery for it in fill.items)
                raise
            self._active()
            log.debug("batch_done", n=len(fill.items),
                      fill_ms=round((t_full - fill.started) * 1000, 2),
                      process_ms=round((self._last_activity - t_full) * 1000, 2),
                      queued=self._queue.qsize())

    async def _process(self, batch: list[_Item]) -> None:
        start, now = time.time(), time.time()
        serving = self.serving  # one snapshot per batch: a swap lands between batches
        if serving.primary is None:  # the model went away: leave the frames for later
            self._release(it.delivery for it in batch)
            return
        # Frames can go stale while queued, too: a live line wants the newest frames.
        stale = [self.policy.is_stale(self.backlogs.get(it.delivery.stream, 0), it.frame.ts, now)
                 for it in batch]
        if any(stale):
            pairs = list(zip(batch, stale, strict=True))
            await self.publisher.skip([it.delivery for it, old in pairs if old])
            batch = [it for it, old in pairs if not old]
        good, dead, measures = [], [], []
        for item in batch:
            image, measured = (await item.images)[item.index]
            if isinstance(image, MemoryError):  # not the frame's fault: a redelivery retries
                self._release([item.delivery])
            elif isinstance(image, FrameError):  # what decode_many makes of other errors
                dead.append(self.publisher.letter(item.delivery, image))
            else:
                good.append((item, image))
                measures.append(measured)
        await self.publisher.dead_letter(dead)
        if not good:
            return
        items = [(item.delivery, item.frame) for item, _ in good]
        try:
            verdicts, shadow, infer_ms = await asyncio.get_running_loop().run_in_executor(
                self.threads.infer, infer_batch, serving, [d.stream for d, _ in items],
                [f for _, f in items], [img for _, img in good], self.s.masks,
                [self.recipes.threshold(d.stream, f) for d, f in items])
        except Exception as exc:
            # Left unacknowledged: another delivery retries it, and after
            # RLR_MAX_DELIVERIES it is dead-lettered instead of blocking the line.
            self._failed(f"inference failed: {type(exc).__name__}: {exc}")
            log.error("inference_failed", n=len(good), error=self.last_error)
            self._release(d for d, _ in items)  # let the claimer retry them
            return
        self.stats.batches += 1
        self.metrics.batch_size.observe(len(good))
        self.metrics.inference.observe(infer_ms / 1000)
        await self.publisher.submit(Scored(items, verdicts, shadow, start, infer_ms, measures,
                                           serving.manifests(), [img for _, img in good]))

    # ------------------------------------------------------------------ recovery

    async def _claimer(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            if self.serving.primary is None:  # others (with a model) may take them over
                self._first_claim.set()
                await self._sleep(self.s.claim_interval_s)
                continue
            try:
                claimed = await self.io.claim_stale(self.s.claim_idle_ms,
                                                    max(4 * self.s.batch_size, 100))
            except SourceUnavailable as exc:
                await self.outages.down(exc, backoff)
                continue
            self.outages.up(backoff)
            self.supervisor.beat("claimer")
            self._first_claim.set()
            await self.publisher.trimmed(claimed.trimmed)
            if claimed.deliveries:
                self._active()
                log.info("frames_claimed", n=len(claimed.deliveries),
                         entries=[d.entry_id for d in claimed.deliveries[:10]])
                await self._admit(claimed.deliveries)
            await self._sleep(self.s.claim_interval_s)

    def liveness(self) -> dict:
        """The heartbeat (`daemon.wire.heartbeat` reads and judges it)."""
        return heartbeat(self)

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            await asyncio.sleep(min(0.1, end - time.monotonic()))

