"""What `rlrctl status` shows, as plain data: per line its rollout, queue, dead letters,
workers (from their heartbeats) and recent rollout history."""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis

from daemon.models.registry import Registry
from daemon.wire import keys
from daemon.wire.heartbeat import judge, read_heartbeats
from daemon.wire.text import text


def line_stats(client: redis.Redis, line: str) -> dict[str, int]:
    """The line's persistent counters (skipped, dead_lettered, ...)."""
    return {text(k): int(v) for k, v in client.hgetall(keys.stats(line)).items()}


def known_lines(registry: Registry, beats: Iterable[dict]) -> list[str]:
    """Lines with a rollout or a worker serving them."""
    lines = set(registry.rollouts())
    for beat in beats:
        lines.update(str(x) for x in beat.get("lines") or [])
    return sorted(lines)


def queue(client: redis.Redis, line: str, group: str) -> dict:
    """Frames stream length, and the worker group's lag (undelivered) and pending (unacked)."""
    out: dict = {"length": 0, "lag": None, "pending": None, "consumers": {}, "group": group}
    try:
        out["length"] = int(client.xlen(keys.frames(line)))
        groups = client.xinfo_groups(keys.frames(line))
    except redis.ResponseError:  # no stream yet
        return out
    for g in groups:
        if text(g.get("name")) == group:
            out["lag"], out["pending"] = g.get("lag"), int(g.get("pending") or 0)
            consumers = client.xinfo_consumers(keys.frames(line), group)
            out["consumers"] = {text(c["name"]): {"pending": int(c.get("pending") or 0),
                                                   "idle_ms": int(c.get("idle") or 0)}
                                for c in consumers}
    return out


def worker_row(beat: dict, line: str, consumers: dict, now: float) -> dict:
    health = judge(beat, now)
    models = beat.get("models")
    if models is None:
        models = [beat["model_version"]] if beat.get("model_version") else []
    return {
        "worker": health.worker, "host": health.host, "status": health.status,
        "healthy": health.healthy, "why": health.why,
        "models": list(models), "model_errors": dict(beat.get("model_errors") or {}),
        "backlog": (beat.get("backlog") or {}).get(line),
        "pending": (consumers.get(health.worker) or {}).get("pending"),
        "done": beat.get("done", 0), "dead_lettered": beat.get("dead_lettered", 0),
        "last_error": beat.get("last_error"),
        "age_s": round(now - float(beat.get("updated_at", now)), 1),
        "device": beat.get("device"),
    }


def collect(client: redis.Redis, registry: Registry, lines: Iterable[str] | None, group: str,
            history: int = 5) -> list[dict]:
    """One dict per line (all known lines when `lines` is empty)."""
    beats = read_heartbeats(client)
    chosen = list(lines or []) or known_lines(registry, beats)
    now = time.time()
    out = []
    for line in chosen:
        q = queue(client, line, group)
        out.append({
            "line": line,
            "rollout": registry.rollout(line).to_json(),
            "frames": {k: v for k, v in q.items() if k != "consumers"},
            "dead_letters": int(client.xlen(keys.dlq(line))),
            "stats": line_stats(client, line),
            "workers": [worker_row(b, line, q["consumers"], now) for b in beats
                        if line in (b.get("lines") or [])],
            "history": registry.history(line, history) if history > 0 else [],
        })
    return out
