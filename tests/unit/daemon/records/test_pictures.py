"""Pictures by content, the sample of passes kept, and a folder that cannot be written."""

from __future__ import annotations

import hashlib

import pytest

from daemon.records.pictures import Pictures, PicturesUnavailable, keep_pass, ref_of

from .readonly import read_only


def test_a_picture_is_named_by_its_content_in_sharded_folders(tmp_path):
    pics = Pictures(tmp_path)
    ref = pics.put(b"\x89PNG mask", ".png")
    h = hashlib.sha256(b"\x89PNG mask").hexdigest()
    assert ref == f"{h[:2]}/{h[2:4]}/{h}.png" == ref_of(b"\x89PNG mask", ".png")
    assert pics.path(ref).read_bytes() == b"\x89PNG mask"
    assert pics.put(b"\x89PNG mask", ".png") == ref  # the same bytes: the same file
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{h}.png"]
    assert pics.total_bytes() == 9 and pics.size(ref) == 9
    assert pics.remove([ref, ref]) == (1, 9) and pics.total_bytes() == 0


def test_the_sample_of_passes_is_the_same_for_the_same_frame_and_near_the_rate():
    ids = [f"f{i}" for i in range(20_000)]
    kept = [i for i in ids if keep_pass("l1", "cam1", i, 0.01)]
    assert kept == [i for i in ids if keep_pass("l1", "cam1", i, 0.01)]
    assert 140 <= len(kept) <= 260
    assert not keep_pass("l1", "cam1", "f1", 0) and keep_pass("l1", "cam1", "f1", 1)


def test_a_read_only_folder_raises_pictures_unavailable(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    with read_only(folder), pytest.raises(PicturesUnavailable, match="pictures folder"):
        Pictures(folder).put(b"x", ".png")
    assert not list(folder.rglob("*"))
