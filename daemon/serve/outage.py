"""Waiting out an outage of the worker's ports: retry with backoff, log the outage once when it
starts and once when it ends, and tell the heartbeat (`unavailable`, `last_error`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from daemon import logs
from daemon.errors import SourceUnavailable
from daemon.wire.backoff import Backoff

T = TypeVar("T")
log = logs.get("rlr.worker")


class Outages:
    """`retry(call, what)` runs `call` until it succeeds; only cancellation ends it."""

    def __init__(self, on_wait: Callable[[], None] = lambda: None,
                 on_error: Callable[[str], None] = lambda error: None) -> None:
        self.unavailable = False
        self.last_error: str | None = None
        self.on_wait = on_wait  # an outage is not idleness (run_until_idle must not stop)
        self.on_error = on_error

    async def retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        backoff = Backoff()
        while True:
            try:
                result = await call()
            except SourceUnavailable as exc:
                await self.down(exc, backoff, what)
                continue
            self.up(backoff)
            return result

    async def down(self, exc: Exception, backoff: Backoff, what: str = "read") -> None:
        if not self.unavailable:
            log.error("redis_unavailable", during=what, error=str(exc))
        self.unavailable = True
        self.last_error = f"redis: {exc}"
        self.on_error(self.last_error)
        self.on_wait()
        await backoff.asleep()

    def up(self, backoff: Backoff) -> None:
        backoff.reset()
        if self.unavailable:
            self.unavailable = False
            log.info("redis_reconnected")
