"""structlog set-up: JSON lines (for log shippers) or coloured console output, on stderr."""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal

import structlog
from pydantic import Field

from daemon.settings import PartSettings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class LogSettings(PartSettings):
    """How a daemon process writes its log (structlog on stderr)."""

    log_format: Literal["json", "console"] = Field("json", description="structlog renderer")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug adds per-batch timing events")


def configure(log_format: str = "json", level: str = "info", **bound) -> None:
    """Configure structlog for this process; `bound` fields go on every event (worker, line)."""
    renderer = (structlog.processors.JSONRenderer() if log_format == "json"
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if bound:
        structlog.contextvars.bind_contextvars(**bound)


def get(name: str | None = None):
    return structlog.get_logger(name)


class Throttle:
    """At most one log event per key every `interval_s`, with the count of what was held
    back: a flood of identical warnings (every skipped frame under overload) becomes one
    line every few seconds that says how many."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._next: dict[object, float] = {}
        self._held: dict[object, int] = {}

    def due(self, key: object, n: int = 1) -> int:
        """Count `n` occurrences of `key`; when an event is due, how many it stands for
        (held back ones included), else 0."""
        self._held[key] = self._held.get(key, 0) + n
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            return 0
        self._next[key] = now + self.interval_s
        return self._held.pop(key)

    def overdue(self) -> dict[object, int]:
        """Counts held back whose interval is over (to log them even if nothing new comes)."""
        now = time.monotonic()
        out = {}
        for key in [k for k in self._held if now >= self._next.get(k, 0.0)]:
            self._next[key] = now + self.interval_s
            out[key] = self._held.pop(key)
        return out
