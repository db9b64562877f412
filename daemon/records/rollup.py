"""The hourly rollups (`tables.frame_hours`, `tables.part_hours`): what the rows a batch added
add to them, written in the batch's own transaction, and how hours add up to shifts and days.

Only rows the insert reported as new are counted, inside the transaction that inserted them:
a batch written twice adds nothing the second time, and a batch rolled back adds nothing at
all, so the rollups equal counts of the rows they were made from (exactly once, like the rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from daemon.records.tables import KEYS, frame_hours, part_hours

HOUR_MS = 3_600_000

# the columns of a new row the rollups need (what the insert returns)
FRAME_COLUMNS = ("line", "camera", "product_class", "ts_ms", "is_anomaly")
PART_COLUMNS = ("line", "recipe", "product", "ts_ms", "verdict", "outcome")


def hour_of(ts_ms: int) -> int:
    """Where the UTC hour of `ts_ms` begins."""
    return ts_ms // HOUR_MS * HOUR_MS


def _deltas(keyed: Iterable[tuple[tuple, bool, bool]]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for key, reject, incomplete in keyed:
        counts = out.setdefault(key, [0, 0, 0])
        counts[0] += 1
        counts[1] += reject
        counts[2] += incomplete
    return out


def frame_deltas(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, list[int]]:
    """(line, camera, product, hour) -> [total, anomalous, 0] of new frame rows."""
    return _deltas(((r["line"], r["camera"], r["product_class"] or "", hour_of(r["ts_ms"])),
                    bool(r["is_anomaly"]), False) for r in rows)


def part_deltas(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, list[int]]:
    """(line, recipe, product, hour) -> [total, rejects, incomplete] of new part rows: a
    reject is a part the gate rejected (`outcome`), so an incomplete part rejected counts as
    a reject and as incomplete."""
    return _deltas(((r["line"], r["recipe"] or "", r["product"] or "", hour_of(r["ts_ms"])),
                    r["outcome"] == "reject", r["verdict"] == "incomplete") for r in rows)


def add(conn: sa.Connection, table: sa.Table, deltas: dict[tuple, list[int]]) -> None:
    """Add `deltas` to the rollup `table` (insert or add to the hour's counts). Keys go in
    sorted order, so two writers adding to the same hours lock them in the same order."""
    if not deltas:
        return
    names = KEYS[table.name]
    insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)
    stmt = insert.on_conflict_do_update(
        index_elements=names,
        set_={c: table.c[c] + insert.excluded[c] for c in ("total", "rejects", "incomplete")})
    conn.execute(stmt, [{**dict(zip(names, key, strict=True)), "total": n[0], "rejects": n[1],
                         "incomplete": n[2]} for key, n in sorted(deltas.items())])


def add_new_rows(conn: sa.Connection, frames: Iterable[Mapping], parts: Iterable[Mapping]
                 ) -> None:
    """The rollups of the new rows of a batch, on the batch's connection (transaction)."""
    add(conn, frame_hours, frame_deltas(frames))
    add(conn, part_hours, part_deltas(parts))


def bucket_start(hour_ms: int, by: str, day_start_ms: int, shift_hours: int,
                 shift_start_h: int) -> int:
    """Where the hour / shift / day that holds the UTC hour `hour_ms` begins.

    `day_start_ms` is the plant's midnight in UTC terms (minus its UTC offset). Shifts begin
    at `shift_start_h` each plant day and last `shift_hours`; when 24 is not a multiple of
    the shift length, the day's last shift is the shorter one (shifts start again at
    `shift_start_h` the next day). With a UTC offset that is not a whole number of hours
    (+5:30, +5:45), a day or shift begins inside a UTC hour: that hour counts whole in the
    day or shift its start falls in."""
    if by == "hour":
        return hour_ms
    day_ms = 24 * HOUR_MS
    if by == "day":
        return (hour_ms - day_start_ms) // day_ms * day_ms + day_start_ms
    first = day_start_ms + shift_start_h * HOUR_MS  # the first shift of a day, in UTC terms
    day = (hour_ms - first) // day_ms * day_ms + first
    into = hour_ms - day
    return day + into // (shift_hours * HOUR_MS) * shift_hours * HOUR_MS


def rebuild(conn: sa.Connection) -> None:
    """Make the rollups again from the raw rows (rows written by other means than `Store`:
    generated in SQL, loaded from an export). Replaces every hour: the rollups of rows that
    retention deleted go too."""
    hour = f"ts_ms / {HOUR_MS} * {HOUR_MS}"
    conn.execute(frame_hours.delete())
    conn.execute(part_hours.delete())
    conn.execute(sa.text(f"""
INSERT INTO frame_hours (line, camera, product, hour_ms, total, rejects, incomplete)
SELECT line, camera, COALESCE(product_class, ''), {hour}, COUNT(*),
       SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END), 0
FROM frame_results GROUP BY line, camera, COALESCE(product_class, ''), {hour}"""))
    conn.execute(sa.text(f"""
INSERT INTO part_hours (line, recipe, product, hour_ms, total, rejects, incomplete)
SELECT line, COALESCE(recipe, ''), COALESCE(product, ''), {hour}, COUNT(*),
       SUM(CASE WHEN outcome = 'reject' THEN 1 ELSE 0 END),
       SUM(CASE WHEN verdict = 'incomplete' THEN 1 ELSE 0 END)
FROM part_verdicts GROUP BY line, COALESCE(recipe, ''), COALESCE(product, ''), {hour}"""))
