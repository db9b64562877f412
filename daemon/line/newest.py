"""The newest frame of a live source, for triggered shots.

A camera that free-runs fills a buffer (OpenCV's, the network's) while the producer waits for
a trigger; reading it after the trigger would give a picture of the past, maybe of the previous
part. `Newest` reads the source on a thread and keeps only the latest frame, so a trigger gets
the picture of now.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from daemon.line.sources.base import Captured, Source

_WAKE_S = 0.1  # longest wait between looks at `stopped`


class Newest:
    """Reads `source` on a thread; `take()` gives the newest frame not given before."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._cond = threading.Condition()
        self._frame: Captured | None = None
        self._seq = self._taken = 0
        self._ended = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="newest-frame", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for captured in self.source:
                with self._cond:
                    self._frame, self._seq = captured, self._seq + 1
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the taker, who raises it
            self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def take(self, stopped: Callable[[], bool]) -> Captured | None:
        """The newest frame, waiting for one newer than the last taken; None once the source
        ended or `stopped()`."""
        with self._cond:
            while self._seq == self._taken:
                if self._error is not None:
                    raise self._error
                if self._ended or stopped():
                    return None
                self._cond.wait(_WAKE_S)
            self._taken = self._seq
            return self._frame

    def stop(self) -> None:
        """Stop the source (safe in a signal handler: it only sets the source's flag)."""
        self.source.stop()

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)
