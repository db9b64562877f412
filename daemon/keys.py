"""Redis key names (DESIGN.md "Redis layout"). `{line}` is a Redis Cluster hash tag, so every
key of one line lives in one slot and the worker's Lua scripts may touch several of them."""

from __future__ import annotations

PREFIX = "rlr"


def frames(line: str) -> str:
    return f"{PREFIX}:frames:{{{line}}}"


def results(line: str) -> str:
    return f"{PREFIX}:results:{{{line}}}"


def alerts(line: str) -> str:
    return f"{PREFIX}:alerts:{{{line}}}"


def dlq(line: str) -> str:
    return f"{PREFIX}:dlq:{{{line}}}"


def seen(line: str, camera: str, frame_id: str) -> str:
    """Marks a frame whose result is published (idempotency; expires after `dedup_ttl_s`)."""
    return f"{PREFIX}:seen:{{{line}}}:{camera}:{frame_id}"


def alert_window(line: str, camera: str) -> str:
    """The camera's last n verdicts, for the k-of-n alert rule (a capped list)."""
    return f"{PREFIX}:alertwin:{{{line}}}:{camera}"


def alert_cooldown(line: str, camera: str) -> str:
    return f"{PREFIX}:alertcool:{{{line}}}:{camera}"


def stats(line: str) -> str:
    """Hash of line counters that must survive worker restarts (skipped, dead-lettered)."""
    return f"{PREFIX}:stats:{{{line}}}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}:workers:{worker_id}"


WORKERS_PATTERN = f"{PREFIX}:workers:*"
