"""The records' pictures: frames and masks kept under the records folder by content.

A picture's name is the sha256 of its bytes, in two levels of folders by its first hex digits
(`ab/cd/abcd…ef.png`), so the same bytes written twice (a redelivered batch, a camera that
sends the same image again) are one file, and a name says nothing a reader must trust. A row
keeps the name relative to the folder (`picture_ref`, `mask_ref`). Files are written to a
temporary name and renamed, so a reader never sees half a picture.

`keep_pass` decides which passing frames are kept (RLR_RECORDS_KEEP_PASS) from the frame's
identity alone, so a redelivered entry makes the same choice. A folder that cannot be written
(read-only, full) raises `PicturesUnavailable`; the recorder counts it and keeps the rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

EXTENSIONS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "raw": ".npy", "mask": ".png"}


class PicturesUnavailable(OSError):
    """The pictures folder cannot be written (read-only, full, gone)."""


def keep_pass(line: str, camera: str, frame_id: str, rate: float) -> bool:
    """Whether a passing frame is one of the `rate` share kept: the same answer every time
    for the same frame."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    digest = hashlib.sha256(f"{line}\0{camera}\0{frame_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


def ref_of(data: bytes, extension: str) -> str:
    """The content-addressed name of `data` under the pictures folder."""
    h = hashlib.sha256(data).hexdigest()
    return f"{h[:2]}/{h[2:4]}/{h}{extension}"


class Pictures:
    """The pictures folder (RLR_RECORDS_DIR/pictures)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._folders: set[Path] = set()  # shard folders known to exist (one mkdir each)

    def path(self, ref: str) -> Path:
        return self.root / ref

    def put(self, data: bytes, extension: str) -> str:
        """Keep `data` (once); its ref. `PicturesUnavailable` when the folder cannot take it."""
        ref = ref_of(data, extension)
        path = self.root / ref
        if path.exists():
            return ref
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            if path.parent not in self._folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(path.parent)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            self._folders.discard(path.parent)  # removed under us, perhaps: mkdir next time
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise PicturesUnavailable(exc.errno, f"pictures folder {self.root}: "
                                      f"{exc.strerror or exc}") from None
        return ref

    def size(self, ref: str) -> int:
        try:
            return self.path(ref).stat().st_size
        except OSError:
            return 0

    def remove(self, refs: Iterable[str]) -> tuple[int, int]:
        """Delete the pictures `refs` (already gone: skipped); (files, bytes) removed."""
        files = freed = 0
        for ref in refs:
            path = self.path(ref)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            files += 1
            freed += size
        return files, freed

    def total_bytes(self) -> int:
        """Bytes of every file under the folder (pictures, and any left half-written)."""
        total = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(folder, name)).st_size
        return total
