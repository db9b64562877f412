"""`rlrctl worker` for measurement only: CPU time by stage, and optionally a null engine.

Started by `benchmarks/pipeline.py` (never by a production path): the same worker code runs,
with two things added in this process only.

- **Stage clock.** Every piece of CPU the worker spends is charged to one stage, from each
  thread's own CPU clock (`time.thread_time_ns`): on the event loop by the asyncio task that
  ran (reader, batcher, publish, ...), on the worker's threads by the function (decode,
  model, masks), and result building (`make_result`, `Result.to_fields`) is charged apart from
  the publishing around it. Nested sections charge only their own time, so the stages add up
  to the process's CPU time (the remainder, `other`, is the interpreter and threads outside
  these sections).
- **Null engine** (`BENCH_PROBE_NULL=1`): the model's engine returns scores and maps of the
  right shapes at once, so what is left is the daemon's own cost per frame: its ceiling.

Every half second the totals go to `BENCH_PROBE_FILE` as JSON (`cpu_s`, `stages`), which the
benchmark reads before and after a measured run.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import torch

TASK_STAGES = {"reader": "read", "claimer": "housekeeping", "backlog": "housekeeping",
               "heartbeat": "housekeeping", "batcher": "batching", "publish": "publish",
               "thumbnails": "publish"}


class StageClock:
    """CPU seconds per stage; a section entered inside another stops the outer one's clock."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def _charge(self, stack: list, now: int) -> None:
        if stack:
            stage, since = stack[-1]
            with self._lock:
                self.totals[stage] = self.totals.get(stage, 0.0) + (now - since) / 1e9

    def enter(self, stage: str) -> None:
        stack = self._local.__dict__.setdefault("stack", [])
        now = time.thread_time_ns()
        self._charge(stack, now)
        stack.append((stage, now))

    def leave(self) -> None:
        stack = self._local.stack
        now = time.thread_time_ns()
        self._charge(stack, now)
        stack.pop()
        if stack:
            stack[-1] = (stack[-1][0], now)

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            self.enter(stage)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()
        return timed


def _task_stage(handle) -> str:
    owner = getattr(handle._callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        name = owner.get_name()
        return TASK_STAGES.get(name, "loop")
    return "loop"


def install(clock: StageClock) -> None:
    from daemon.serve import decode, publish, worker
    from daemon.wire import schema

    run = asyncio.events.Handle._run

    def timed_run(self):
        clock.enter(_task_stage(self))
        try:
            return run(self)
        finally:
            clock.leave()

    asyncio.events.Handle._run = timed_run
    decode.Threads.decode_many = clock.wrap("decode", decode.Threads.decode_many)
    worker.infer_batch = clock.wrap("model", worker.infer_batch)
    publish.draw_masks = clock.wrap("masks", publish.draw_masks)
    publish.make_result = clock.wrap("results", publish.make_result)
    schema.Result.to_fields = clock.wrap("results", schema.Result.to_fields)
    schema.Result.to_flat = clock.wrap("results", schema.Result.to_flat)


class NullPrediction:
    def __init__(self, score: torch.Tensor, anomaly_map: torch.Tensor) -> None:
        self.score, self.anomaly_map = score, anomaly_map


class NullEngine:
    """Scores and maps of the right shapes, at once (measurement only)."""

    name, precision = "null", "fp32"

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def predict(self, x: torch.Tensor) -> NullPrediction:
        b, s = x.shape[0], self.image_size
        return NullPrediction(torch.zeros(b), torch.zeros(b, s, s))


def use_null_engine() -> None:
    from daemon.serve import served_model

    served_model.create_engine = lambda name, model, *a, **k: NullEngine(model.image_size)


def report(clock: StageClock, path: Path) -> None:
    while True:
        with clock._lock:
            stages = dict(clock.totals)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cpu_s": time.process_time(), "stages": stages}))
        tmp.replace(path)
        time.sleep(0.5)


def main() -> None:
    clock = StageClock()
    install(clock)
    if os.environ.get("BENCH_PROBE_NULL") == "1":
        use_null_engine()
    if os.environ.get("BENCH_PROBE_FILE"):
        threading.Thread(target=report, args=(clock, Path(os.environ["BENCH_PROBE_FILE"])),
                         daemon=True, name="probe-report").start()
    from daemon.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
