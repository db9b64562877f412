"""What a worker says about itself: its status, and its heartbeat (`rlr:workers:<id>`, JSON with
a TTL).

`daemon.wire.heartbeat` reads heartbeats and judges them for `rlrctl check`, `rlrctl status` and
the console; keep the two in step when a field changes. The status is derived from facts, not
set by hand, so it cannot say `ready` while the worker cannot serve:

    starting            before the consumer groups are in place and the reader's first poll
    waiting_for_model   no model to score with (no RLR_MODEL, no usable rollout)
    redis_unavailable   a port is away (connection lost, Redis out of memory, disk full)
    degraded            a supervised task is down and restarting
    draining            stopping: finishing what was read
    ready               none of the above
    stopped
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict
from typing import Any

from daemon import logs

log = logs.get("rlr.worker")


def worker_status(worker: Any) -> str:
    if worker.phase in ("starting", "stopped", "draining"):
        return worker.phase
    if worker.outages.unavailable:
        return "redis_unavailable"
    if worker.serving.primary is None:
        return "waiting_for_model"
    reader = worker.supervisor.tasks.get("reader")
    if reader is None or not reader.progress_at:
        return "starting"  # ready means the stream is being read, not just that it will be
    if worker.supervisor.down():
        return "degraded"
    return "ready"


def heartbeat(worker: Any) -> dict:
    """The heartbeat of a `daemon.serve.worker.Worker`."""
    primary = worker.serving.primary
    watcher = worker.watcher
    return {"worker": worker.id, "host": socket.gethostname(), "pid": os.getpid(),
            "status": worker.status, "lines": worker.s.lines, "group": worker.s.group,
            "model_version": None if primary is None else primary.version,
            "device": None if primary is None else str(primary.device),
            "models": worker.serving.versions(), "rollouts": worker.serving.revisions(),
            "model_errors": {} if watcher is None else dict(watcher.errors),
            "rollout_warnings": {} if watcher is None else dict(watcher.warnings),
            "tasks": worker.supervisor.snapshot(),
            "started_at": worker.started_at, "updated_at": time.time(),
            "loop_at": worker.loop_at, "stall_s": worker.s.stall_s,
            "backlog": worker.backlogs, "last_error": worker.last_error,
            **asdict(worker.stats)}


def announce(worker: Any) -> None:
    """Log what the worker serves now, or why it waits for a model."""
    primary = worker.serving.primary
    if primary is None:
        watcher = worker.watcher
        why = "; ".join([*watcher.warnings.values(), *watcher.errors.values()]) \
            if watcher is not None else ""
        log.warning("waiting_for_model", lines=worker.s.lines, why=why or None,
                    note="set RLR_MODEL or `rlrctl deploy MODEL --line LINE`")
        return
    log.info("worker_ready", worker=worker.id, lines=worker.s.lines, group=worker.s.group,
             models=worker.serving.versions(), device=str(primary.device),
             batch_size=worker.s.batch_size, calibrated=primary.calibrated)
