"""The video source: a file's frames as RGB, once or looped."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from daemon.line.sources import open_source
from daemon.line.sources.video import VideoSource
from rlr.errors import DataError


def test_video_source_reads_back_and_loops(video):
    frames = list(VideoSource(video))
    assert len(frames) == 3
    for c, level in zip(frames, (40, 120, 200), strict=True):
        assert c.image.shape == (24, 32, 3) and c.image.dtype == np.uint8
        assert abs(float(c.image.mean()) - level) < 4
    assert len(list(itertools.islice(VideoSource(video, loop=True), 8))) == 8


def test_a_file_that_is_no_video_fails_when_opened(tmp_path):
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(DataError, match="cannot open this video"):
        open_source(str(tmp_path / "notes.txt"))
