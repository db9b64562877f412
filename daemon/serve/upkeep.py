"""The worker's periodic chores, each a supervised task of its run loop (`Worker.run`): the
backlog poll (and pruning dead consumers), the heartbeat, and the stations (each line's
recipe read every second; parts past their deadline decided every `RLR_PART_SWEEP_MS`).
Each takes the worker and reaches Redis only through its ports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from daemon import logs
from daemon.errors import SourceUnavailable

log = logs.get("rlr.worker")

RECIPES_EVERY_S = 1.0


async def backlog_loop(w: Any) -> None:
    """Backlog figures, held-back log counts, and now and then dead consumers pruned."""
    next_prune = time.monotonic() + w.s.claim_interval_s
    while True:
        for line in w.s.lines:
            with contextlib.suppress(SourceUnavailable):
                w.backlogs[line] = await w.io.backlog(line)
                w.metrics.pending.labels(line).set(w.backlogs[line])
        w.publisher.flush_logs()
        if time.monotonic() >= next_prune:
            next_prune = time.monotonic() + min(w.s.prune_consumers_s, 600)
            with contextlib.suppress(SourceUnavailable):
                gone = await w.io.prune_consumers(int(w.s.prune_consumers_s * 1000))
                if gone:
                    log.info("consumers_pruned", consumers=gone, idle_s=w.s.prune_consumers_s)
        w.supervisor.beat("backlog")
        await asyncio.sleep(0.5)


async def heartbeat_loop(w: Any) -> None:
    while True:
        with contextlib.suppress(SourceUnavailable):
            await w.io.heartbeat(w.id, w.liveness(), w.s.heartbeat_ttl_s)
        w.supervisor.beat("heartbeat")
        if w.phase == "starting":
            w.loop_at = time.time()  # alive, just not serving yet: liveness passes
        await asyncio.sleep(w.s.heartbeat_s)


async def read_recipes(w: Any) -> None:
    """Each line's active recipe, waited for through a Redis outage."""
    w.recipes.update(await w.outages.retry(lambda: w.io.active_recipes(w.s.lines),
                                           "active_recipes"))


async def stations_loop(w: Any) -> None:
    """The recipes kept current, and the parts past their deadline decided. Runs while the
    worker drains too: a part whose last view is still in flight gets its verdict."""
    every = w.s.part_sweep_ms / 1000
    next_read = time.monotonic() + RECIPES_EVERY_S
    while True:
        if time.monotonic() >= next_read:
            await read_recipes(w)
            next_read = time.monotonic() + RECIPES_EVERY_S
        await w.publisher.tick()
        w.supervisor.beat("stations")
        await asyncio.sleep(every)
