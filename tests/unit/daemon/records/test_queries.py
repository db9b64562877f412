"""The queries against answers computed in plain Python (reference.py) on SQLite; the same
checks run on PostgreSQL in tests/integration/records/."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from daemon.errors import RecordsError
from daemon.records import queries
from daemon.records.settings import RecordsSettings

from .reference import HOUR, T0_MS, frame_rows, part_rows, yield_reference


@pytest.fixture
def filled(store):
    frames, parts = frame_rows(3000), part_rows(800)
    store.write(frames, parts)
    return store, frames, parts


def check_yield(store, frames, parts) -> None:
    settings = RecordsSettings(records_utc_offset_min=90, records_shift_hours=8,
                               records_shift_start_h=6)
    for by in queries.BUCKETS:
        size, shift = queries.bucket_span(by, settings)
        for of, rows in (("parts", parts), ("frames", frames)):
            for line, since in ((None, None), ("l1", T0_MS + 5 * HOUR + 7)):
                got = queries.yield_by(store, line, by, since, of, settings)
                assert [tuple(r) for r in got] == \
                    yield_reference(rows, size, shift, of, line, since), (by, of, line)


def test_yield_by_hour_shift_and_day_matches_a_count_in_python(filled):
    check_yield(*filled)


def test_shifts_and_days_begin_where_the_plant_says():
    s = RecordsSettings(records_utc_offset_min=60, records_shift_start_h=6)
    size, shift = queries.bucket_span("shift", s)
    # a shift begins at 06:00 local = 05:00 UTC
    assert size == 8 * HOUR and (T0_MS + 5 * HOUR - shift) % size == 0
    size, shift = queries.bucket_span("day", s)
    assert (T0_MS - HOUR - shift) % size == 0  # local midnight is 23:00 UTC


def test_parts_filters_by_line_time_and_verdict_newest_first(filled):
    store, _, parts = filled
    since = T0_MS + 24 * HOUR
    got = queries.parts(store, "l2", since, "reject", limit=10_000)
    want = sorted((p for p in parts if p["line"] == "l2" and p["ts_ms"] >= since
                   and p["verdict"] == "reject"), key=lambda p: -p["ts_ms"])
    assert [p["part_id"] for p in got] == [p["part_id"] for p in want]
    assert len(queries.parts(store, limit=5)) == 5
    with pytest.raises(RecordsError, match="pass, reject, incomplete"):
        queries.parts(store, verdict="bad")


def test_part_returns_its_verdict_and_every_view(filled):
    store, frames, parts = filled
    got = queries.part(store, "P7")  # frames whose verdict is not recorded
    want = [f for f in frames if f["part_id"] == "P7"]
    assert len(want) == 3 and got["verdicts"] == []
    assert sorted(f["frame_id"] for f in got["unjoined"]) == sorted(f["frame_id"] for f in want)
    assert {f["view"] for f in got["unjoined"]} == {"top", "side", "end"}
    verdict = queries.part(store, "SN-3")["verdicts"]
    assert [(v["verdict"], v["outcome"], v["views"]) for v in verdict] == \
        [(parts[3]["verdict"], parts[3]["outcome"], parts[3]["views"])]
    assert queries.part(store, "nothing") == {"verdicts": [], "unjoined": []}


def check_wrapped_part_ids(store) -> None:
    """Two parts with the same id (the PLC's counter wrapped) are two rows, listed newest
    first, each with the frames of its own views; a redelivered verdict is still one row."""
    frames, parts = [], []
    for n, first in enumerate((T0_MS, T0_MS + 5 * HOUR)):
        views = {}
        for j, view in enumerate(("top", "side")):
            fid = f"w{n}-{j}"
            frames.append({"line": "lw", "camera": f"cam{j}", "frame_id": fid,
                           "ts_ms": first + j, "score": 0.2 + n, "threshold": 1.0,
                           "is_anomaly": n == 1, "model_version": "v1", "latency_ms": 5.0,
                           "product_class": "bottle", "part_id": "SN-1", "view": view,
                           "picture_ref": None, "mask_ref": None, "entry_id": f"{n}-{j}",
                           "recorded_ms": first})
            views[view] = {"camera": f"cam{j}", "frame_id": fid, "score": 0.2 + n}
        parts.append({"line": "lw", "part_id": "SN-1", "recipe": "r1", "product": "b",
                      "verdict": ("pass", "reject")[n], "outcome": ("pass", "reject")[n],
                      "views": views, "first_ts_ms": first, "ts_ms": first + 30,
                      "total_ms": 30.0, "entry_id": f"9-{n}", "recorded_ms": first,
                      "missing": None, "product_class": "bottle"})
    assert store.write(frames, parts) == (4, 2)
    assert store.write(frames, parts) == (0, 0)
    got = queries.part(store, "SN-1", "lw")
    assert [v["verdict"] for v in got["verdicts"]] == ["reject", "pass"]
    assert [[f["frame_id"] for f in v["frames"]] for v in got["verdicts"]] == \
        [["w1-0", "w1-1"], ["w0-0", "w0-1"]]
    assert got["unjoined"] == []


def test_a_part_id_that_comes_back_after_a_wrap_around_is_another_part(store):
    check_wrapped_part_ids(store)


def test_rejects_are_counted_by_outcome_and_incomplete_parts_by_verdict(filled):
    store, _, parts = filled
    n = queries.part_counts(store, "l1")
    mine = [p for p in parts if p["line"] == "l1"]
    assert n == (len(mine), sum(p["outcome"] == "reject" for p in mine),
                 sum(p["verdict"] == "incomplete" for p in mine))
    both = sum(p["outcome"] == "reject" and p["verdict"] == "incomplete" for p in mine)
    let_pass = sum(p["outcome"] == "pass" and p["verdict"] == "incomplete" for p in mine)
    assert both and let_pass  # the data has both kinds of incomplete part
    got = queries.parts(store, "l1", outcome="pass", verdict="incomplete", limit=10_000)
    assert len(got) == let_pass
    with pytest.raises(RecordsError, match="pass, reject"):
        queries.parts(store, outcome="rework")


def test_recipe_switches_are_listed_newest_first(store):
    rows = [{"line": "l1", "ts_ms": T0_MS + i, "action": ("activated", "refused")[i % 2],
             "name": f"r{i}", "revision": i or None, "by": "anna", "via": "cli",
             "why": None, "entry_id": f"{i}-0", "recorded_ms": T0_MS} for i in range(4)]
    assert store.write_batch((), (), rows).recipes == 4
    assert store.write_batch((), (), rows).recipes == 0
    got = queries.recipes(store, "l1", T0_MS + 1)
    assert [r["name"] for r in got] == ["r3", "r2", "r1"]
    assert queries.recipes(store, "other") == []


def test_frames_filters(filled):
    store, frames, _ = filled
    got = queries.frames(store, line="l1", camera="cam2", anomalous=True, limit=10_000)
    want = {f["frame_id"] for f in frames
            if f["line"] == "l1" and f["camera"] == "cam2" and f["is_anomaly"]}
    assert {f["frame_id"] for f in got} == want and want


def test_export_csv_holds_every_row_since(filled, tmp_path):
    store, frames, parts = filled
    since = T0_MS + 48 * HOUR
    n = queries.export(store, tmp_path / "f.csv", since, "csv", "frames", chunk=128)
    with (tmp_path / "f.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert n == len(rows) == sum(f["ts_ms"] >= since for f in frames)
    assert {r["frame_id"] for r in rows} == {f["frame_id"] for f in frames if f["ts_ms"] >= since}
    assert queries.export(store, tmp_path / "p.csv", None, "csv", "parts") == len(parts)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow installed")
def test_parquet_without_pyarrow_names_the_extra(filled, tmp_path):
    with pytest.raises(RecordsError, match=r"pip install 'rlr\[parquet\]'"):
        queries.export(filled[0], tmp_path / "f.parquet", fmt="parquet")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow")
def test_export_parquet_holds_every_row(filled, tmp_path):
    import pyarrow.parquet as pq

    store, frames, _ = filled
    assert queries.export(store, tmp_path / "f.parquet", fmt="parquet") == len(frames)
    assert pq.read_table(tmp_path / "f.parquet").num_rows == len(frames)


def test_since_takes_durations_and_dates():
    now = 1_800_000_000.0
    assert queries.parse_since("8h", now) == (now - 8 * 3600) * 1000
    assert queries.parse_since("7d", now) == (now - 7 * 86400) * 1000
    assert queries.parse_since("2026-12-07", now) == T0_MS
    assert queries.parse_since("2026-12-07T01:00+01:00", now) == T0_MS
    assert queries.parse_since(None) is None
    with pytest.raises(RecordsError, match="8h"):
        queries.parse_since("yesterday")


def test_frames_no_view_names_join_the_instance_whose_time_holds_them(store):
    frame = {"line": "lt", "camera": "cam0", "frame_id": "x1", "ts_ms": T0_MS + 10,
             "score": 0.1, "threshold": 1.0, "is_anomaly": False, "model_version": "v1",
             "latency_ms": 5.0, "product_class": None, "part_id": "SN-2", "view": "top",
             "picture_ref": None, "mask_ref": None, "entry_id": "1-0", "recorded_ms": T0_MS}
    late = {**frame, "frame_id": "x2", "ts_ms": T0_MS + 9 * HOUR, "entry_id": "2-0"}
    verdict = {"line": "lt", "part_id": "SN-2", "recipe": None, "product": None,
               "verdict": "pass", "outcome": "pass", "views": {}, "first_ts_ms": T0_MS,
               "ts_ms": T0_MS + 20, "total_ms": 20.0, "entry_id": "3-0", "recorded_ms": T0_MS,
               "missing": None, "product_class": None}
    store.write([frame, late], [verdict])
    got = queries.part(store, "SN-2")
    assert [f["frame_id"] for f in got["verdicts"][0]["frames"]] == ["x1"]
    assert [f["frame_id"] for f in got["unjoined"]] == ["x2"]
