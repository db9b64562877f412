"""Which frames of a batch keep their pictures, and keeping them: run by the recorder before it
writes the batch, so the rows carry the pictures' refs.

Kept: every anomalous frame and a deterministic share of the passing ones
(RLR_RECORDS_KEEP_PASS, `pictures.keep_pass`). The mask comes with the result entry; the frame
is looked up in the frames stream (`frame_source`). A frame no longer there is counted
(`pictures_missing`) and the row is written without it. A folder that cannot be written
(read-only, full) makes the recorder degraded: pictures are skipped and counted
(`pictures_skipped`) and tried again some seconds later, rows go on being written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from daemon import logs
from daemon.records.frame_source import find_frames
from daemon.records.pictures import EXTENSIONS, Pictures, PicturesUnavailable, keep_pass

log = logs.get(__name__)

RETRY_S = 5.0


class PictureKeeper:
    """Keeps the pictures of the rows that deserve one; counts into `stats` (pictures,
    pictures_missing, pictures_skipped)."""

    def __init__(self, client, pictures: Pictures, keep_pass_rate: float, stats) -> None:
        self.client, self.pictures, self.rate, self.stats = client, pictures, keep_pass_rate, \
            stats
        self.error = ""  # why pictures cannot be written now ("" when they can)
        self._retry_at = 0.0
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="pictures")

    def wanted(self, row: Mapping[str, Any]) -> bool:
        return bool(row["is_anomaly"]) or keep_pass(row["line"], row["camera"],
                                                    row["frame_id"], self.rate)

    def keep(self, line: str, items: Sequence[tuple[dict, Mapping]]) -> None:
        """Write the pictures of `items` ((row, entry fields) of `line`, each wanted) and set
        the rows' `picture_ref` / `mask_ref`."""
        if not items:
            return
        if self.error and time.monotonic() < self._retry_at:
            self.stats.pictures_skipped += len(items)
            return
        try:
            frames = find_frames(self.client, line, [(r["camera"], r["frame_id"])
                                                     for r, _ in items])
        except Exception as exc:  # Redis away: the rows go without their frames
            log.warning("frames_lookup_failed", line=line, error=str(exc))
            frames = [None] * len(items)
        jobs: list[tuple[dict, str, bytes, str]] = []  # (row, its column, bytes, extension)
        for (row, fields), frame in zip(items, frames, strict=True):
            mask = fields.get(b"mask", fields.get("mask"))
            if mask:
                jobs.append((row, "mask_ref", bytes(mask), EXTENSIONS["mask"]))
            if frame is None:
                self.stats.pictures_missing += 1
            else:
                jobs.append((row, "picture_ref", frame.data, frame.extension))
        # file creation waits on the disk, not the CPU: a few at once
        refs = list(self._pool.map(self._put, jobs))
        self.pictures.flush()  # the bytes of the files created, into the folder's tally
        failed = next((r for r in refs if isinstance(r, PicturesUnavailable)), None)
        if failed is not None:
            for row, _ in items:
                row["picture_ref"] = row["mask_ref"] = None
            self._failed(failed, skipped=len(items))
            return
        for (row, column, _, _), ref in zip(jobs, refs, strict=True):
            row[column] = ref
        self.stats.pictures += sum(1 for _, column, _, _ in jobs if column == "picture_ref")
        if self.error:
            log.info("records_pictures_back", folder=str(self.pictures.root))
            self.error = ""

    def _put(self, job: tuple[dict, str, bytes, str]) -> str | PicturesUnavailable:
        try:
            return self.pictures.put(job[2], job[3])
        except PicturesUnavailable as exc:
            return exc

    def _failed(self, exc: PicturesUnavailable, skipped: int) -> None:
        self.stats.pictures_skipped += skipped
        self._retry_at = time.monotonic() + RETRY_S
        if not self.error:
            log.error("records_pictures_unwritable", error=str(exc), folder=str(self.pictures.root),
                      fix="free space in, or give write access to, RLR_RECORDS_DIR; rows "
                          "are still written, pictures skipped")
        self.error = str(exc)
