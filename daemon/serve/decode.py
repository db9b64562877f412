"""Where the worker's CPU work beside the model runs: decoding frames to the model's input
size and drawing result masks.

With the model on a GPU: on their own threads, overlapping inference. With the model on the
CPU: on the inference thread, between batches; decoding beside CPU inference costs the model
more (its parallel ops wait for a preempted thread) than decoding takes (measured: 15 % vs 2 %
with `lite`). `RLR_DECODE_INLINE` overrides the choice.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from daemon.serve.engine import Engine
from daemon.settings import Settings
from daemon.wire.codec import decode_frame
from daemon.wire.schema import Frame


class Threads:
    """The worker's inference thread and its decode threads."""

    def __init__(self, settings: Settings) -> None:
        self.inline = settings.decode_inline
        self.max_side = settings.max_image_side
        self.infer = ThreadPoolExecutor(1, "rlr-infer")
        self._decode = ThreadPoolExecutor(settings.decode_threads, "rlr-decode")

    def cpu(self, primary: Engine | None) -> ThreadPoolExecutor:
        """The pool for decoding and mask drawing, given the model that serves now."""
        if self.inline == "auto":
            inline = primary is None or primary.device.type == "cpu"
        else:
            inline = self.inline == "yes"
        return self.infer if inline else self._decode

    def decode_many(self, frames: list[Frame], size: int,
                    measure: Callable[[int, Frame, np.ndarray], Any] | None = None
                    ) -> list[tuple[np.ndarray | Exception, Any]]:
        """Each frame as a (size, size, 3) uint8 image, or the exception that stopped it
        (reported per frame by the batcher, so one bad frame never fails its chunk), with
        what `measure(index, frame, image)` says of it (camera health), while it is hot."""
        out: list[tuple[np.ndarray | Exception, Any]] = []
        for i, frame in enumerate(frames):
            try:
                image = decode_frame(frame, size, self.max_side)
            except Exception as exc:
                out.append((exc, None))
                continue
            out.append((image, None if measure is None else measure(i, frame, image)))
        return out

    def shutdown(self) -> None:
        self._decode.shutdown(wait=False, cancel_futures=True)
        self.infer.shutdown(wait=False, cancel_futures=True)
