"""A live camera through OpenCV: a device index (0, 1, ...) or a stream URL (rtsp://,
http://, anything FFmpeg opens). Read failures reopen it with backoff."""

from __future__ import annotations

from collections.abc import Iterator

import cv2

from daemon import logs
from daemon.line.sources.base import Captured, nap, redact, register
from daemon.wire.backoff import Backoff


class LiveSource:
    """A camera index or a stream URL. Read failures reopen it with backoff; never ends
    until stopped, because a camera that drops out usually comes back."""

    live = True  # frames are of now: a triggered shot takes the newest (`daemon.line.newest`)

    def __init__(self, target: int | str, backoff: Backoff | None = None) -> None:
        self.target = target
        self.backoff = backoff or Backoff(0.5, 10.0)
        self._closed = False

    def stop(self) -> None:
        """End the iteration after the current frame (safe in a signal handler)."""
        self._closed = True

    def __iter__(self) -> Iterator[Captured]:
        log = logs.get()
        failing = False
        while not self._closed:
            cap = cv2.VideoCapture(self.target)
            try:
                while not self._closed:
                    ok, bgr = cap.read() if cap.isOpened() else (False, None)
                    if not ok:
                        break
                    if failing:
                        log.info("source_reconnected", source=redact(self.target))
                        failing = False
                        self.backoff.reset()
                    yield Captured(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None)
            finally:
                cap.release()
            if self._closed:
                return
            delay = self.backoff.next()
            log.warning("source_unavailable", source=redact(self.target), retry_s=delay)
            failing = True
            nap(delay, lambda: self._closed)


# The other stream protocols FFmpeg reads; a scheme nobody claims (a typo such as
# "pylom://") is refused with the list of forms instead of retried forever.
_FFMPEG = ("rtmp", "rtmps", "udp", "tcp", "srt", "rtp", "mms", "mmsh", "hls", "file")


def _stream_url(spec: str) -> bool:
    return spec.isdigit() or ("://" in spec and spec.partition("://")[0].lower() in _FFMPEG)


# Last in rank: after every source with a scheme of its own has had its turn.
@register("live", form="a camera index (0, 1, ...) or stream URL (rtsp://, http://, rtmp:// "
          "...)", schemes=("rtsp://", "rtsps://", "http://", "https://"), rank=90,
          accepts=_stream_url)
def open_live(spec: str, loop: bool) -> LiveSource:
    return LiveSource(int(spec) if spec.isdigit() else spec)  # a live feed has no loop
