"""The hourly rollups: equal to counts of the raw rows after batches written twice, in
pieces and rolled back; shifts and days as sums of hours."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from daemon.records import rollup
from daemon.records.tables import frame_hours

from .reference import HOUR, T0_MS, frame_rows, part_rows, rollups_and_raw_counts


def check_rollups_after_replays(store) -> None:
    frames, parts = frame_rows(2500), part_rows(700)
    store.write(frames[:1000], parts[:300])
    store.write(frames[:1500], parts[:500])  # a redelivery overlapping new entries
    store.write(frames, parts)
    store.write(frames, parts)  # the whole batch again: adds nothing
    for got, want in rollups_and_raw_counts(store):
        assert got == want and sum(r[4] for r in got) in (2500, 700)


def test_rollups_equal_the_raw_counts_after_replayed_batches(store):
    check_rollups_after_replays(store)


def test_a_batch_rolled_back_adds_nothing_to_the_rollups(store, monkeypatch):
    store.write(frame_rows(100), ())

    def fail(conn, frames, parts):
        raise sa.exc.OperationalError("add", {}, Exception("database went away"))

    monkeypatch.setattr(rollup, "add_new_rows", fail)
    with pytest.raises(Exception, match="went away"):
        store.write(frame_rows(300), ())
    monkeypatch.undo()
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(frame_hours.c.total))).scalar_one() == 100
    store.write(frame_rows(300), ())
    for got, want in rollups_and_raw_counts(store):
        assert got == want


def test_hours_add_up_to_shifts_and_days():
    day = -60 * 60_000  # UTC+1: local midnight is 23:00 UTC
    h = T0_MS + 5 * HOUR
    assert rollup.bucket_start(h + 0, "hour", day, 8, 6) == h
    assert rollup.bucket_start(T0_MS + 2 * HOUR, "day", day, 8, 6) == T0_MS - HOUR
    # 8 h shifts from 06:00 local = 05:00 UTC
    assert rollup.bucket_start(T0_MS + 4 * HOUR, "shift", day, 8, 6) == T0_MS - 3 * HOUR
    assert rollup.bucket_start(T0_MS + 5 * HOUR, "shift", day, 8, 6) == T0_MS + 5 * HOUR
    assert rollup.bucket_start(T0_MS + 12 * HOUR, "shift", day, 8, 6) == T0_MS + 5 * HOUR


def test_a_shift_length_that_does_not_divide_the_day_makes_the_last_shift_shorter():
    # 7 h shifts from 06:00 UTC: 06-13, 13-20, 20-03, then 03-06 (3 h), then 06 again
    starts = {rollup.bucket_start(T0_MS + k * HOUR, "shift", 0, 7, 6) - T0_MS
              for k in range(6, 30)}
    assert sorted(s // HOUR for s in starts) == [6, 13, 20, 27]
    assert rollup.bucket_start(T0_MS + 30 * HOUR, "shift", 0, 7, 6) == T0_MS + 30 * HOUR
