"""Where the recorder finds the frame of a result it keeps a picture of, without the worker
doing anything more.

A result entry carries its mask (PNG) but not its frame. The frame is still in
`rlr:frames:{line}` until the stream's cap trims it, and the worker, when it published the
result, wrote the frame's entry id into the frame's dedup key: `rlr:seen:{line}:…` holds
"<result id> <frame entry id>" (`keys.seen`, kept RLR_DEDUP_TTL_S). So the recorder reads the
seen key, then that one entry (XRANGE id id): two pipelined round trips per batch, only for
the frames it keeps (rejects and the sampled passes). A frame trimmed or a seen key expired
before the recorder got there is reported missing; the row is written without its picture.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from daemon.records.pictures import EXTENSIONS
from daemon.wire import keys
from daemon.wire.schema import FrameError, parse_frame
from daemon.wire.text import entry_field, text


class FramePicture(NamedTuple):
    data: bytes
    extension: str  # .jpg, .png, .npy (raw pixels, with their shape and dtype)


def _picture(fields) -> FramePicture | None:
    try:
        frame = parse_frame(fields, max_payload_bytes=1 << 40)
    except FrameError:
        return None
    if frame.encoding != "raw":
        return FramePicture(frame.data, EXTENSIONS[frame.encoding])
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(frame.data, frame.dtype).reshape(frame.shape),
            allow_pickle=False)
    return FramePicture(buf.getvalue(), EXTENSIONS["raw"])


def find_frames(client, line: str, wanted: Sequence[tuple[str, str]]
                ) -> list[FramePicture | None]:
    """The frames of (camera, frame id) pairs of `line`, None where the stream no longer
    holds it (or never did)."""
    if not wanted:
        return []
    pipe = client.pipeline(transaction=False)
    for camera, frame_id in wanted:
        pipe.get(keys.seen(line, camera, frame_id))
    seen = pipe.execute()
    entries: list[str | None] = []
    for value in seen:
        parts = text(value).split(" ") if value is not None else []
        entries.append(parts[1] if len(parts) > 1 else None)
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        if entry is not None:
            pipe.xrange(keys.frames(line), entry, entry, count=1)
    found = iter(pipe.execute() if any(entries) else [])
    out: list[FramePicture | None] = []
    for entry, (_camera, frame_id) in zip(entries, wanted, strict=True):
        got = next(found) if entry is not None else []
        picture = None
        if got:
            fields = got[0][1]
            # the entry id is reused by no other frame, but check it is this one's
            if entry_field(fields, "frame_id") == frame_id:
                picture = _picture(fields)
        out.append(picture)
    return out
