"""A dummy source as a newcomer would add it: one file in daemon/line/sources/ (the tests put
this folder on the package's path instead of copying it there)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from daemon.line.sources.base import Captured, register


class DummySource:
    """`n` grey frames."""

    def __init__(self, n: int) -> None:
        self.n, self._closed = n, False

    def stop(self) -> None:
        self._closed = True

    def __iter__(self) -> Iterator[Captured]:
        for i in range(self.n):
            if self._closed:
                return
            yield Captured(np.full((8, 8, 3), 128, np.uint8), f"dummy#{i + 1}")


@register("dummy", form="dummy://N (N grey frames)", schemes=("dummy://",))
def open_dummy(spec: str, loop: bool) -> DummySource:
    return DummySource(int(spec.removeprefix("dummy://") or 1))
