"""A video file (anything OpenCV's FFmpeg reads) standing in for a camera."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2

from daemon.line.sources.base import Captured, register
from rlr.errors import DataError


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


@register("video", form="an existing video file (mp4, avi, mkv ...)", rank=20,
          accepts=lambda spec: Path(spec).is_file())
def open_video(spec: str, loop: bool) -> VideoSource:
    return VideoSource(spec, loop)
