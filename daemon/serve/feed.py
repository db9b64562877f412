"""How a batch of decoded frames reaches the model's device.

On the CPU the images become one float tensor in one copy (`rlr.data.to_tensor`).

On CUDA the bytes that cross to the device are the frames' uint8 pixels, not floats (a quarter
of the traffic): they are gathered into a pinned host buffer, copied on a copy stream with
`non_blocking=True`, and converted to float on the device. The compute stream waits for the
copy only on the device, so the host thread is free as soon as the copy is queued. Each buffer
is reused once its copy has finished (an event says when), so a steady line allocates nothing
per batch. In the worker the inference thread stages what the CPU decoded, just before the
model runs; what overlaps the model's work for the previous batch is the decoding on the GPU
(`decode_jpegs`, on the decode threads' own streams), which is how camera frames arrive.

Batches can be padded up to a few fixed sizes (`buckets`): compiled models
(`RLR_COMPILE`) and CUDA graphs then see a handful of shapes instead of one per batch size, and
never recompile at run time. The padding rows are zeros; their outputs are dropped.

`decode_jpegs` decodes a batch of JPEG frames on the device (nvJPEG through torchvision) when
the model runs on CUDA, so the worker's CPU time per frame no longer grows with the frame size.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rlr.data import resize, to_tensor
from rlr.errors import DataError


def buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes a bucketed model sees: powers of two below `max_batch`, and it."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return (*sizes, max_batch)


def bucket_for(n: int, sizes: Sequence[int]) -> int:
    """The smallest bucket that holds `n` images (or `n` itself beyond the largest)."""
    return next((b for b in sizes if b >= n), n)


class Feed:
    """Stages batches of (S, S, 3) uint8 images as float (B, 3, S, S) tensors in [0, 1] on
    `device`, padded up to a bucket when `bucketed`. Thread-safe: decode threads and the
    inference thread may stage at once."""

    def __init__(self, device: torch.device, max_batch: int, bucketed: bool = False) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.sizes = buckets(max_batch) if bucketed else None
        self._lock = threading.Lock()
        self._free: dict[tuple, list[tuple[Tensor, torch.cuda.Event | None]]] = {}
        self._stream = torch.cuda.Stream(device) if self.cuda else None

    def padded(self, n: int) -> int:
        return n if self.sizes is None else bucket_for(n, self.sizes)

    def stage(self, images: Sequence[np.ndarray | Tensor]) -> Tensor:
        """The batch on the device, `padded(len(images))` rows (the first len(images) real).
        Images are (S, S, 3) uint8 arrays, or (3, S, S) uint8 tensors (decoded on the device:
        `decode_jpegs`)."""
        n = len(images)
        if n == 0:
            raise DataError("Feed.stage got no images; pass at least one (S, S, 3) uint8 array")
        rows = self.padded(n)
        if any(isinstance(img, Tensor) for img in images):
            chw = [img.to(self.device) if isinstance(img, Tensor) else
                   torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).to(self.device)
                   for img in images]
            if rows > n:
                chw += [torch.zeros_like(chw[0])] * (rows - n)
            return torch.stack(chw).float().div_(255.0)
        if not self.cuda:
            batch = to_tensor(images)
            if rows > n:
                batch = torch.cat([batch, batch.new_zeros((rows - n, *batch.shape[1:]))])
            return batch
        shape = (rows, *images[0].shape)
        host = self._buffer(shape)
        view = host.numpy()
        for i, img in enumerate(images):
            if img.shape != shape[1:] or img.dtype != np.uint8:
                raise DataError(f"Feed.stage: image {i} is {img.dtype} {img.shape}, the batch "
                                f"is uint8 {shape[1:]}; resize to the model's size first")
            view[i] = img
        if rows > n:
            view[n:] = 0
        stream = self._stream
        with torch.cuda.stream(stream):
            on_device = host.to(self.device, non_blocking=True)
            batch = on_device.permute(0, 3, 1, 2).float().div_(255.0)
            done = torch.cuda.Event()
            done.record(stream)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        batch.record_stream(torch.cuda.current_stream(self.device))
        with self._lock:
            self._free.setdefault(shape, []).append((host, done))
        return batch

    def _buffer(self, shape: tuple) -> Tensor:
        """A pinned host buffer of `shape` whose last copy has finished, or a new one."""
        with self._lock:
            pool = self._free.get(shape, [])
            for i, (buf, done) in enumerate(pool):
                if done is None or done.query():
                    del pool[i]
                    return buf
        return torch.empty(shape, dtype=torch.uint8, pin_memory=True)


def fit(image: np.ndarray | Tensor, size: int) -> np.ndarray | Tensor:
    """`image` at the model's size: (S, S, 3) arrays through `rlr.data.resize`, (3, S, S)
    tensors on their device (a rollout's models can differ in input size)."""
    if isinstance(image, Tensor):
        return image if image.shape[-2:] == (size, size) else _resized(image, size)
    return image if image.shape[:2] == (size, size) else resize(image, size)


def _resized(image: Tensor, size: int) -> Tensor:
    """(3, H, W) uint8 -> (3, size, size), as `rlr.data.resize` does on the CPU (what the
    model was trained with): the area filter down, bilinear up."""
    mode = "area" if size < max(image.shape[-2:]) else "bilinear"
    out = F.interpolate(image[None].float(), size=(size, size), mode=mode,
                        **({} if mode == "area" else {"align_corners": False}))
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def decode_jpegs(datas: Sequence[bytes], size: int, device: torch.device) -> Tensor:
    """A batch of JPEG frames decoded on `device` (nvJPEG on CUDA; libjpeg on the CPU) and
    resized to (size, size): uint8 (B, 3, size, size). Sizes must have been checked already
    (`daemon.wire.codec`'s header check); a frame that does not decode raises DataError."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        raise DataError("decode_jpegs got no frames")
    raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        images = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        raise DataError(f"a JPEG frame of the batch does not decode ({exc}); decode the "
                        "batch on the CPU to find which") from None
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=device)
    for i, img in enumerate(images):
        out[i] = img if img.shape[1:] == (size, size) else _resized(img, size)
    return out
