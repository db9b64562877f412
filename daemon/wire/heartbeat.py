"""Worker heartbeats on the wire: the `rlr:workers:<id>` JSON a worker writes, read back, and
judged the one way `rlrctl check`, `rlrctl status` and the console all use (pure functions)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import redis

from daemon.wire import keys

HEALTHY = ("ready",)
ALIVE = ("ready", "starting", "waiting_for_model", "draining", "redis_unavailable", "degraded")


class WorkerHealth(NamedTuple):
    worker: str
    host: str
    status: str
    healthy: bool
    why: str
    beat: dict


def read_presence(client: redis.Redis, pattern: str, name_field: str) -> list[dict]:
    """The JSON values of the presence keys (string + TTL) matching `pattern`, sorted by
    `name_field`; keys that expired meanwhile or hold no JSON object are passed over."""
    out = []
    for key in client.scan_iter(match=pattern, count=500):
        raw = client.get(key)
        if raw is None:  # expired between SCAN and GET
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return sorted(out, key=lambda v: str(v.get(name_field, "")))


def read_heartbeats(client: redis.Redis) -> list[dict]:
    """Every live worker's heartbeat, sorted by worker name."""
    return read_presence(client, keys.WORKERS_PATTERN, "worker")


def judge(beat: Mapping, now: float | None = None, live: bool = False) -> WorkerHealth:
    """Readiness (default: serving frames) or liveness (`live`: the process makes progress;
    restarting it would not help a worker that waits for a model or for Redis)."""
    now = time.time() if now is None else now
    status = str(beat.get("status", "unknown"))
    stall_s = float(beat.get("stall_s", 60))
    stalled = now - float(beat.get("loop_at", 0)) > stall_s
    tasks = beat.get("tasks") if isinstance(beat.get("tasks"), dict) else {}
    down = sorted(n for n, t in tasks.items() if isinstance(t, dict)
                  and t.get("state") in ("restarting", "failed"))
    reader = tasks.get("reader") if isinstance(tasks.get("reader"), dict) else None
    reader_idle = now - float(reader.get("progress_at") or 0) if reader else 0.0
    if status not in (ALIVE if live else HEALTHY):
        why = f"status {status}" + (f" ({beat['last_error']})" if beat.get("last_error") else "")
        if down:
            why += f"; tasks down: {', '.join(down)}"
    elif stalled:
        why = f"worker loop stalled for {now - float(beat['loop_at']):.0f}s"
    elif not live and reader is not None and reader_idle > stall_s:
        why = f"the reader has not polled the stream for {reader_idle:.0f}s (RLR_STALL_S)"
    else:
        why = "ok"
    return WorkerHealth(str(beat.get("worker")), str(beat.get("host")), status,
                        why == "ok", why, dict(beat))


def check(beats: Iterable[Mapping], worker: str | None = None, host: str | None = None,
          line: str | None = None, min_workers: int = 1, now: float | None = None,
          live: bool = False) -> tuple[bool, list[WorkerHealth], str]:
    """(ok, the workers considered, one-line verdict)."""
    chosen = [judge(b, now, live) for b in beats
              if (worker is None or b.get("worker") == worker)
              and (host is None or b.get("host") == host)
              and (line is None or line in (b.get("lines") or []))]
    healthy = sum(w.healthy for w in chosen)
    scope = (f"worker {worker}" if worker else f"host {host}" if host else "all hosts") + \
        (f", line {line}" if line else "")
    if not chosen:
        return False, chosen, f"no live worker heartbeat ({scope})"
    ok = healthy >= min_workers
    return ok, chosen, f"{healthy} of {len(chosen)} worker(s) healthy ({scope}), " \
        f"need {min_workers}"


def this_host() -> str:
    return socket.gethostname()
