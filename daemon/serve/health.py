"""What a worker says about itself in its heartbeat (`rlr:workers:<id>`, JSON with a TTL).

`daemon.wire.heartbeat` reads these and judges them for `rlrctl check`, `rlrctl status` and
the console; keep the two in step when a field changes.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict
from typing import Any


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
            "started_at": worker.started_at, "updated_at": time.time(),
            "loop_at": worker.loop_at, "stall_s": worker.s.stall_s,
            "backlog": worker.backlogs, "last_error": worker.last_error,
            **asdict(worker.stats)}
