"""The folder source: every image under a folder, in path order, once or looped."""

from __future__ import annotations

import itertools

import numpy as np

from daemon.line.sources.folder import FolderSource


def test_folder_source_yields_rgb_sorted_and_loops(folder):
    root, imgs = folder
    once = list(FolderSource(root))
    assert [c.name for c in once] == ["0.png", "1.png", "2.png"]  # recursive, sorted by path
    for c, img in zip(once, imgs, strict=True):
        assert c.image.dtype == np.uint8 and c.image.shape == (16, 16, 3)
        np.testing.assert_array_equal(c.image, img)
    looped = list(itertools.islice(FolderSource(root, loop=True), 7))
    assert [c.name for c in looped] == ["0.png", "1.png", "2.png"] * 2 + ["0.png"]


def test_folder_source_skips_broken_files(folder):
    root, _ = folder
    (root / "broken.png").write_bytes(b"not a png")
    assert len(list(FolderSource(root))) == 3
