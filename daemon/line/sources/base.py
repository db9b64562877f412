"""Where a camera's frames come from: a folder of images, a video file, a camera index or a
stream URL (`open_source` picks by what the spec is). Live sources reconnect with backoff."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from daemon import logs
from daemon.wire.backoff import Backoff
from rlr.data import list_images, load_image
from rlr.errors import DataError

_NAP = 0.1  # longest uninterrupted sleep, so stop() (a signal handler) takes effect promptly


class Captured(NamedTuple):
    image: np.ndarray  # uint8 RGB (H, W, 3)
    name: str | None = None  # file name or frame position, for logs


def nap(seconds: float, stopped: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stopped():
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _NAP))


def redact(target: str | int) -> str:
    """The source without a password (rtsp://user:pw@host is common on IP cameras)."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", str(target))


# ----------------------------------------------------------------------------- sources


class FolderSource:
    """Images of a folder (recursive, sorted by path), once or round and round."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        self.paths = list_images([path])
        self.loop = loop
        self._closed = False

    def stop(self) -> None:
        """End the iteration after the current frame (safe in a signal handler)."""
        self._closed = True

    def __iter__(self) -> Iterator[Captured]:
        log = logs.get()
        while not self._closed:
            good = 0
            for path in self.paths:
                if self._closed:
                    return
                try:
                    image = load_image(path)
                except DataError as exc:
                    # One broken file must not stop a line's camera feed.
                    log.warning("source_skipped", path=str(path), error=str(exc))
                    continue
                good += 1
                yield Captured(image, path.name)
            if not good:
                raise DataError(f"none of the {len(self.paths)} images under "
                                f"{self.paths[0].parent} can be read; see the warnings above")
            if not self.loop:
                return


class VideoSource:
    """Frames of a video file (anything OpenCV's FFmpeg can read), once or looped."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        self.path, self.loop = Path(path), loop
        self._closed = False
        self._open().release()  # fail now, with the path in the message, not on first read

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot open this video; use a format FFmpeg "
                            "reads (mp4, avi, mkv ...) or a folder of images")
        return cap

    def stop(self) -> None:
        """End the iteration after the current frame (safe in a signal handler)."""
        self._closed = True

    def __iter__(self) -> Iterator[Captured]:
        while not self._closed:
            cap, n = self._open(), 0
            try:
                while not self._closed:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    n += 1
                    yield Captured(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), f"{self.path.name}#{n}")
            finally:
                cap.release()
            if n == 0:
                raise DataError(f"{self.path}: no frame could be decoded from this video")
            if not self.loop:
                return


class LiveSource:
    """A camera index or a stream URL. Read failures reopen it with backoff; never ends
    until stopped, because a camera that drops out usually comes back."""

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


Source = FolderSource | VideoSource | LiveSource


def open_source(spec: str, loop: bool = False) -> Source:
    """Folder, video file, camera index ("0") or stream URL ("rtsp://..."), by what `spec` is."""
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, loop)
    if path.is_file():
        return VideoSource(path, loop)
    if spec.isdigit():
        return LiveSource(int(spec))
    if "://" in spec:
        return LiveSource(spec)
    raise DataError(f"source {spec!r} is not an existing folder or video file, a camera index "
                    "(0, 1, ...) or a stream URL (rtsp://, http://); check the path")
