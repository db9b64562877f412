"""The records' pictures: frames and masks kept under the records folder by content.

A picture's name is the sha256 of its bytes, in two levels of folders by its first hex digits
(`ab/cd/abcd…ef.png`), so the same bytes written twice (a redelivered batch, a camera that
sends the same image again) are one file, and a name says nothing a reader must trust. A row
keeps the name relative to the folder (`picture_ref`, `mask_ref`). Files are written to a
temporary name and renamed, so a reader never sees half a picture.

`keep_pass` decides which passing frames are kept (RLR_RECORDS_KEEP_PASS) from the frame's
identity alone, so a redelivered entry makes the same choice. A folder that cannot be written
(read-only, full) raises `PicturesUnavailable`; the recorder counts it and keeps the rows.

The retention's size check needs the folder's bytes every run; walking a folder of millions of
pictures each time costs minutes. So the bytes are tallied in `pictures/.tally` (JSON: bytes,
time of the last full walk): each file created adds its size, each file removed takes its
size off (`flush` writes a process's changes, under a file lock, so the recorder and `rlrctl
records prune` both keep it right), and a full walk sets it again at each process's first
`used_bytes` (the recorder's start) and once a day (`RESYNC_S`), which also takes in files
that came or went by other means. A file is created with a hard link that fails when the name
exists, so two writers of the same bytes count it once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

EXTENSIONS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "raw": ".npy", "mask": ".png"}
TALLY = ".tally"
RESYNC_S = 86_400.0


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

    def __init__(self, root: str | Path, resync_s: float = RESYNC_S) -> None:
        self.root = Path(root)
        self.resync_s = resync_s
        self._folders: set[Path] = set()  # shard folders known to exist (one mkdir each)
        self._lock = threading.Lock()
        self._pending = 0  # bytes created (+) and removed (-) not yet in the tally file
        self._walked = False  # this process has walked the folder (at its first used_bytes)

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
            if _publish(tmp, path):
                with self._lock:
                    self._pending += len(data)
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
        with self._lock:
            self._pending -= freed
        return files, freed

    def total_bytes(self) -> int:
        """Bytes of every file under the folder (pictures, and any left half-written), by a
        full walk: what the tally is set to at a resync."""
        total = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                if name == TALLY and folder == str(self.root):
                    continue
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(folder, name)).st_size
        return total

    def used_bytes(self, now: float | None = None) -> int:
        """The folder's bytes from the tally, walked again at this process's first call and
        when the last walk is `resync_s` old."""
        self.flush()
        now = time.time() if now is None else now
        with self._tally() as tally:
            if not self._walked or tally.get("bytes") is None or \
                    now - tally.get("synced", 0) >= self.resync_s:
                tally.update(bytes=self.total_bytes(), synced=now)
                self._walked = True
            return tally["bytes"]

    def flush(self) -> None:
        """Add this process's bytes created and removed since the last flush to the tally
        (nothing when no walk set it yet: the walk will count them)."""
        with self._lock:
            delta, self._pending = self._pending, 0
        if not delta:
            return
        with self._tally() as tally:
            if tally.get("bytes") is not None:
                tally["bytes"] = max(tally["bytes"] + delta, 0)

    @contextlib.contextmanager
    def _tally(self) -> Iterator[dict]:
        """The tally file's content, locked against other processes, written back after. A
        folder that cannot hold it (missing, read-only) gives a tally of its own each time,
        so every call walks: correct, only slower."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(self.root / TALLY, "a+")  # noqa: SIM115 - closed below
        except OSError:
            yield {}
            return
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            try:
                tally = json.loads(f.read() or "{}")
            except ValueError:
                tally = {}  # a torn write: walk again
            before = dict(tally)
            yield tally
            if tally != before:
                with contextlib.suppress(OSError):
                    f.seek(0)
                    f.truncate()
                    f.write(json.dumps(tally))
                    f.flush()


def _publish(tmp: Path, path: Path) -> bool:
    """Give the written `tmp` its name `path`, unless another writer of the same bytes did
    first; whether this call created it. `tmp` is gone after."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        created = False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        os.replace(tmp, path)  # a filesystem without hard links
        return True
    else:
        created = True
    os.unlink(tmp)
    return created
