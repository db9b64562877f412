"""Exponential backoff with a cap, for every reconnect and retry loop of the daemon."""

from __future__ import annotations

import asyncio
import time


class Backoff:
    """Exponential backoff with a cap, for reconnect loops."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return delay

    def reset(self) -> None:
        self.current = self.first

    def sleep(self) -> None:
        time.sleep(self.next())

    async def asleep(self) -> None:
        await asyncio.sleep(self.next())
