"""Where the worker's CPU work beside the model runs: decoding frames to the model's input
size and drawing result masks.

With the model on a GPU: on their own threads, overlapping inference. With the model on the
CPU: on the inference thread, between batches; decoding beside CPU inference costs the model
more (its parallel ops wait for a preempted thread) than decoding takes (measured: 15 % vs 2 %
with `lite`). `RLR_DECODE_INLINE` overrides the choice.

With the model on CUDA, JPEG frames are decoded on the GPU in batches (nvJPEG,
`RLR_DEVICE_DECODE`): the CPU reads each header (the size limit holds before any pixel is
decoded), the GPU decodes and resizes the chunk on a stream of the decode thread, overlapping
the model's work for the previous batch, and camera health measures a 64x64 thumbnail copied
back. Whatever the GPU refuses is decoded on the CPU, frame by frame, as before. One
difference: a frame whose compressed data is damaged past its header (with its end marker in
place) may be scored as the GPU decoded it, where the CPU path dead-letters it as corrupt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from daemon import logs
from daemon.errors import FrameError
from daemon.serve.camera_measures import THUMB
from daemon.serve.feed import decode_jpegs
from daemon.serve.served_model import ServedModel
from daemon.serve.settings import DecodeSettings
from daemon.wire.codec import decode_frame, jpeg_header_ok
from daemon.wire.schema import Frame
from rlr.errors import DataError

log = logs.get("rlr.worker")


class Threads:
    """The worker's inference thread and its decode threads."""

    def __init__(self, settings: DecodeSettings) -> None:
        self.inline = settings.decode_inline
        self.on_gpu = settings.device_decode
        self.max_side, self.max_pixels = settings.max_image_side, settings.max_pixels
        self._local = threading.local()  # per decode thread: its CUDA stream
        self._gpu_failed = False
        self.infer = ThreadPoolExecutor(1, "rlr-infer")
        self._decode = ThreadPoolExecutor(settings.decode_threads, "rlr-decode")

    def cpu(self, primary: ServedModel | None) -> ThreadPoolExecutor:
        """The pool for decoding and mask drawing, given the model that serves now."""
        if self.inline == "auto":
            inline = primary is None or primary.device.type == "cpu"
        else:
            inline = self.inline == "yes"
        return self.infer if inline else self._decode

    def device(self, primary: ServedModel | None) -> torch.device | None:
        """Where JPEG frames are decoded for `primary`: its device, or None (the CPU path)."""
        if primary is None or self.on_gpu == "no" or self._gpu_failed:
            return None
        if self.on_gpu == "auto" and primary.device.type != "cuda":
            return None
        return primary.device

    def decode_many(self, frames: list[Frame], size: int,
                    measure: Callable[[int, Frame, np.ndarray], Any] | None = None,
                    device: torch.device | None = None
                    ) -> list[tuple[np.ndarray | torch.Tensor | Exception, Any]]:
        """Each frame as a (size, size, 3) uint8 image, or what stopped it: a `FrameError`
        (dead-lettered) or a `MemoryError` (left for a redelivery), reported per frame by the
        batcher, so one bad frame never fails its chunk; with
        what `measure(index, frame, image)` says of it (camera health), while it is hot.

        With `device`, JPEG frames come back as (3, size, size) uint8 tensors on it."""
        out: list = [None] * len(frames)
        if device is not None:
            self._decode_on(device, frames, size, measure, out)
        for i, frame in enumerate(frames):
            if out[i] is not None:
                continue
            try:
                image = decode_frame(frame, size, self.max_side, self.max_pixels)
            except MemoryError as exc:  # the host's state, not the frame's: retried later
                out[i] = (exc, None)
                continue
            except Exception as exc:  # a decoder bug must not take the worker down
                out[i] = (exc if isinstance(exc, FrameError) else FrameError(
                    "corrupt", f"decoding failed ({type(exc).__name__}: {exc})"), None)
                continue
            out[i] = (image, None if measure is None else measure(i, frame, image))
        return out

    def _decode_on(self, device: torch.device, frames: list[Frame], size: int,
                   measure: Callable | None, out: list) -> None:
        """Fill `out` for the JPEG frames the device decodes; leave the rest to the CPU."""
        idx = [i for i, f in enumerate(frames)
               if f.encoding == "jpeg" and jpeg_header_ok(f.data, self.max_side, self.max_pixels)]
        if not idx:
            return
        stream = None
        if device.type == "cuda":
            stream = getattr(self._local, "stream", None)
            if stream is None:
                stream = self._local.stream = torch.cuda.Stream(device)
        try:
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                batch = decode_jpegs([frames[i].data for i in idx], size, device)
                thumbs = None
                if measure is not None:
                    thumbs = F.interpolate(batch.float(), size=(THUMB, THUMB), mode="area") \
                        .round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            if stream is not None:
                stream.synchronize()  # ready on the device before the model's stream reads it
        except DataError:  # a frame it refuses: the CPU path says which and why
            return
        except Exception as exc:  # the device cannot decode at all: stop trying
            self._gpu_failed = True
            log.warning("device_decode_off", error=f"{exc!r}")
            return
        for j, i in enumerate(idx):
            out[i] = (batch[j], None if thumbs is None else measure(i, frames[i], thumbs[j]))

    def shutdown(self) -> None:
        self._decode.shutdown(wait=False, cancel_futures=True)
        self.infer.shutdown(wait=False, cancel_futures=True)
