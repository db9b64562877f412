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


def test_the_tally_follows_writes_and_removals_without_walking_again(tmp_path, monkeypatch):
    pics = Pictures(tmp_path)
    first = [pics.put(bytes([i]) * (100 + i), ".png") for i in range(10)]
    walks = []
    real_walk = pics.total_bytes
    monkeypatch.setattr(pics, "total_bytes", lambda: walks.append(1) or real_walk())
    assert pics.used_bytes(now=1000.0) == real_walk() and walks == [1]  # walked at start
    more = [pics.put(bytes([i]) * 50, ".jpg") for i in range(20, 25)]
    pics.put(bytes([20]) * 50, ".jpg")  # the same bytes again: one file, counted once
    pics.remove(first[:3] + first[:1])
    assert pics.used_bytes(now=2000.0) == real_walk() and walks == [1]
    # another process (`rlrctl records prune`) removes some: its changes reach the tally
    other = Pictures(tmp_path)
    other.used_bytes(now=2000.0)
    other.remove(more[:2])
    other.flush()
    assert pics.used_bytes(now=3000.0) == real_walk() and walks == [1]


def test_the_tally_is_walked_again_once_a_day(tmp_path, monkeypatch):
    pics = Pictures(tmp_path, resync_s=86_400)
    pics.put(b"a" * 10, ".png")
    assert pics.used_bytes(now=0.0) == 10
    (tmp_path / "stray.bin").write_bytes(b"x" * 7)  # came by other means: not tallied
    assert pics.used_bytes(now=86_000.0) == 10
    assert pics.used_bytes(now=86_400.0) == 17
    (tmp_path / ".tally").write_text("{torn")
    assert Pictures(tmp_path).used_bytes(now=86_401.0) == 17  # a bad tally: walked again


def test_a_folder_that_cannot_hold_the_tally_is_walked_each_time(tmp_path, monkeypatch):
    (tmp_path / "file").write_bytes(b"")
    pics = Pictures(tmp_path / "file" / "pictures")  # cannot even be made
    walks = []
    monkeypatch.setattr(pics, "total_bytes", lambda: walks.append(1) or 0)
    assert pics.used_bytes() == pics.used_bytes() == 0 and walks == [1, 1]
