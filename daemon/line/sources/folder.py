"""A folder of images (recursive, sorted by path) standing in for a camera."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daemon import logs
from daemon.line.sources.base import Captured, register
from rlr.data import list_images, load_image
from rlr.errors import DataError


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


@register("folder", form="an existing folder of images", rank=10,
          accepts=lambda spec: Path(spec).is_dir())
def open_folder(spec: str, loop: bool) -> FolderSource:
    return FolderSource(spec, loop)
