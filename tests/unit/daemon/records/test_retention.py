"""Retention with small limits: rows and their pictures go together, oldest first, by age and
by size; a picture another kept row names stays; rollups stay for their own age."""

from __future__ import annotations

import sqlalchemy as sa

from daemon.records.pictures import Pictures
from daemon.records.retention import FRAME_ROW_BYTES, prune
from daemon.records.settings import RecordsSettings
from daemon.records.tables import frame_hours, frame_results, part_verdicts

from .reference import HOUR, T0_MS, part_rows

DAY = 24 * HOUR
NOW = T0_MS + 10 * DAY


def frames_with_pictures(pics: Pictures, days: int = 10, shared: bool = True) -> list[dict]:
    """One frame an hour for `days` days, each with its own 1000-byte picture, except that
    the first and the last frame share one (when `shared`)."""
    rows = []
    for h in range(days * 24):
        data = bytes([h % 251]) * 1000 + str(h).encode()
        if shared and h in (0, days * 24 - 1):
            data = b"shared" * 200
        rows.append({"line": "l1", "camera": "cam0", "frame_id": f"f{h}",
                     "ts_ms": T0_MS + h * HOUR, "score": 2.0, "threshold": 1.0,
                     "is_anomaly": True, "model_version": "v1", "latency_ms": 1.0,
                     "product_class": "bottle", "part_id": None, "view": None,
                     "picture_ref": pics.put(data, ".jpg"), "mask_ref": None,
                     "entry_id": f"{h}-0", "recorded_ms": T0_MS})
    return rows


def settings(**kw) -> RecordsSettings:
    base = {"records_days": 0, "records_max_gb": 0, "records_rollup_days": 0}
    return RecordsSettings(**{**base, **kw})


def kept(store) -> list[str]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(frame_results.c.frame_id)
                                           .order_by(frame_results.c.ts_ms))]


def rollup_total(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.sum(frame_hours.c.total))).scalar_one()


def test_rows_older_than_the_age_go_with_their_pictures_and_rollups_stay(store, tmp_path):
    check_age(store, tmp_path)


def check_age(store, tmp_path) -> None:
    pics = Pictures(tmp_path / "pictures")
    rows = frames_with_pictures(pics)
    parts = part_rows(50, span_h=240)
    store.write(rows, parts)
    s = settings(records_days=7)
    dry = prune(store, pics, s, now=NOW, dry_run=True)
    assert len(kept(store)) == 240 and pics.total_bytes() > 0
    report = prune(store, pics, s, now=NOW)
    assert report.cutoff_ms == NOW - 7 * DAY and report.frames == 72 == dry.frames
    assert report.parts == dry.parts == sum(p["ts_ms"] < NOW - 7 * DAY for p in parts)
    assert kept(store) == [f"f{h}" for h in range(72, 240)]
    # the first frame's picture is the last one's too: it stays
    assert report.pictures == dry.pictures == 71
    assert pics.path(rows[0]["picture_ref"]).exists()
    assert not pics.path(rows[1]["picture_ref"]).exists()
    assert all(pics.path(r["picture_ref"]).exists() for r in rows[72:])
    assert rollup_total(store) == 240
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.min(part_verdicts.c.ts_ms))).scalar_one() >= \
            NOW - 7 * DAY
    assert prune(store, pics, s, now=NOW).rows == 0


def test_over_the_size_the_oldest_hours_go_until_it_fits(store, tmp_path):
    pics = Pictures(tmp_path / "pictures")
    # (a shared picture counts as freed with its oldest row: the next run takes the rest)
    store.write(frames_with_pictures(pics, days=2, shared=False), ())
    used = pics.total_bytes() + 48 * FRAME_ROW_BYTES
    limit = used - 10 * (1000 + FRAME_ROW_BYTES)  # about 10 hours too much
    report = prune(store, pics, settings(records_max_gb=limit / 1e9), now=NOW)
    left = kept(store)
    assert left[0] in ("f10", "f11") and left[-1] == "f47" and report.frames == int(left[0][1:])
    assert pics.total_bytes() + len(left) * FRAME_ROW_BYTES <= limit
    assert prune(store, pics, settings(records_max_gb=limit / 1e9), now=NOW).rows == 0


def test_rollups_go_after_their_own_longer_age(store, tmp_path):
    pics = Pictures(tmp_path / "pictures")
    store.write(frames_with_pictures(pics, days=4), ())
    report = prune(store, pics, settings(records_days=1, records_rollup_days=2), now=T0_MS +
                   4 * DAY)
    assert report.frames == 72 and report.rollup_rows == 48
    assert rollup_total(store) == 48
