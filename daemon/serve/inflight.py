"""Frames in work stay the worker's own.

A frame read and not yet settled (acknowledged with its result or dead letter) is pending in
the group with an idle time that grows from its delivery. Left alone, a batch slower than
RLR_CLAIM_IDLE_MS (large images, a slow device, a busy host) would be claimed by another worker,
or by this worker's own claimer, while it is still being scored: the work is done twice and
every claim counts a delivery, until the frame is dead-lettered as `too_many_deliveries`. So
while frames are held, their idle time is reset (XCLAIM JUSTID to this consumer, which counts
no delivery) at a quarter of the claim idle time: only a worker that stops (or stalls longer
than that) leaves frames to be claimed.
"""

from __future__ import annotations

import asyncio
import contextlib

from daemon.errors import SourceUnavailable


def refresh_interval_s(claim_idle_ms: int) -> float:
    """How often held frames are refreshed: well under the claim idle time."""
    return max(0.025, claim_idle_ms / 4000)


async def keep_held(worker) -> None:
    """Forever: reset the idle time of the frames `worker` holds (its live set of (line, entry
    id), read at each pass) through its port's `touch`. Redis being away is the reader's and
    the claimer's business: a pass that fails is simply the next pass's to do."""
    every = refresh_interval_s(worker.s.claim_idle_ms)
    while True:
        held = sorted(worker._held)
        if held:
            with contextlib.suppress(SourceUnavailable):
                await worker.io.touch(held)
        worker.supervisor.beat("inflight")
        await asyncio.sleep(every)
