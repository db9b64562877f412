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
    got = queries.part(store, "P7")
    want = [f for f in frames if f["part_id"] == "P7"]
    assert len(want) == 3
    assert sorted(f["frame_id"] for f in got["frames"]) == sorted(f["frame_id"] for f in want)
    assert {f["view"] for f in got["frames"]} == {"top", "side", "end"}
    verdict = queries.part(store, "SN-3")["verdicts"]
    assert [(v["verdict"], v["views"]) for v in verdict] == \
        [(parts[3]["verdict"], parts[3]["views"])]
    assert queries.part(store, "nothing") == {"verdicts": [], "frames": []}


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
