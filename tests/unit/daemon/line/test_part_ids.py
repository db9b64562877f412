"""Part ids that need no Redis: the counter, the file-name pattern, views, and the one-line
errors of a bad `--part-from` spec. `key` and `trigger` run against a real Redis in
tests/integration/line/test_producer.py."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.errors import SettingsError
from daemon.line.part_ids import Counter, NamePattern, NoPart, Tag, open_part_ids, parse_views
from daemon.line.sources import Captured

_IMG = np.zeros((4, 4, 3), np.uint8)


def _tags(part_ids, names):
    out = []
    for name in names:
        try:
            out.append(part_ids.tag(Captured(_IMG, name)))
        except NoPart as exc:
            out.append(str(exc))
    return out


def test_counter_counts_one_id_per_frame_from_start():
    counter = open_part_ids("counter:SN-{n:06d}:start=40000")
    assert isinstance(counter, Counter) and counter.frame_driven
    assert _tags(counter, ["a", "b", "c"]) == [Tag("SN-040000"), Tag("SN-040001"),
                                               Tag("SN-040002")]


@pytest.mark.parametrize(("spec", "first"), [("counter", "1"), ("counter:start=7", "7"),
                                             ("counter:P{n}", "P1"), ("counter:a:b{n}", "a:b1"),
                                             ("counter:x{n:x}:start=255", "xff")])
def test_counter_forms(spec, first):
    assert open_part_ids(spec).tag(Captured(_IMG)).part == first


def test_counter_with_views_gives_one_id_per_round_of_views():
    counter = open_part_ids("counter:start=5", views=("top", "side"))
    assert _tags(counter, "abcde") == [Tag("5", "top"), Tag("5", "side"), Tag("6", "top"),
                                       Tag("6", "side"), Tag("7", "top")]


def test_name_reads_the_first_group_of_the_file_name():
    pattern = open_part_ids(r"name:^(SN-\d+)")
    assert isinstance(pattern, NamePattern)
    tags = _tags(pattern, ["SN-40122.png", "SN-40123_x.png", "other.png", None])
    assert tags[:2] == [Tag("SN-40122"), Tag("SN-40123")]
    assert "'other.png' does not match" in tags[2] and "'' does not match" in tags[3]


def test_name_with_views_starts_a_part_when_the_id_changes():
    pattern = open_part_ids(r"name:(\d+)_", views=("top", "side"))
    tags = _tags(pattern, ["1_a.png", "1_b.png", "2_a.png", "3_a.png", "3_b.png", "3_c.png"])
    assert tags[:5] == [Tag("1", "top"), Tag("1", "side"), Tag("2", "top"), Tag("3", "top"),
                        Tag("3", "side")]  # part 2 misses its side view: it stays incomplete
    assert "part '3' already has a frame for each of the views top,side" in tags[5]


def test_name_with_a_view_group_reads_the_view_too():
    pattern = open_part_ids(r"name:^(?P<part>SN-\d+)_(?P<view>[a-z]+)\.", views=("top", "side"))
    tags = _tags(pattern, ["SN-1_side.png", "SN-1_top.png", "SN-2_back.png"])
    assert tags[:2] == [Tag("SN-1", "side"), Tag("SN-1", "top")]  # sorted names, right views
    assert "'back' is not one of --views top,side" in tags[2]


def test_a_bad_part_id_in_a_name_is_a_skip_not_a_crash():
    pattern = open_part_ids(r"name:^id(.*)\.png$")
    assert "part id '' is empty" in _tags(pattern, ["id.png"])[0]
    assert "holds" in _tags(pattern, ["id\u200bx.png"])[0]  # a zero-width space


@pytest.mark.parametrize(("spec", "why"), [
    ("count", "not a known form"), ("key:x", "not a known form"), ("", "not a known form"),
    ("counter:SN-", "holds {n} once"), ("counter:{n}{n}", "holds {n} once"),
    ("counter:{m}", "holds {n} once"), ("counter:{n:q}", "does not format"),
    ("counter:a b{n}", "does not format"), ("counter:{n:0200d}", "does not format"),
    ("name:(", "does not compile"), ("name:SN-", "needs a group"),
])
def test_a_bad_spec_is_one_line_naming_the_forms(spec, why):
    with pytest.raises(SettingsError) as err:
        open_part_ids(spec)
    message = str(err.value)
    assert why in message and "\n" not in message
    assert "counter[:TEMPLATE][:start=N]" in message and "name:REGEX" in message


def test_views():
    assert parse_views("top, side") == ("top", "side")
    assert parse_views(None, "top") == ("top",) and parse_views(None) == ()
    with pytest.raises(SettingsError, match="twice"):
        parse_views("top,top")
    with pytest.raises(SettingsError, match="not both"):
        parse_views("top", "side")
    with pytest.raises(SettingsError, match="view id"):
        parse_views("top,\x07")
