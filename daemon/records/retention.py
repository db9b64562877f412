"""Retention of the records: rows and their pictures deleted together, oldest first, by age
(RLR_RECORDS_DAYS) and by size (RLR_RECORDS_MAX_GB); the hourly rollups and the recipe
switches stay for their own, longer age (RLR_RECORDS_ROLLUP_DAYS). Run by the recorder every
RLR_RECORDS_PRUNE_EVERY_S and by `rlrctl records prune`.

The size is the pictures folder's bytes (its running tally, `Pictures.used_bytes`: no walk of
the folder at each run) plus the rows counted at an estimated size each
(`FRAME_ROW_BYTES`, `PART_ROW_BYTES`, indexes included): a database's file does not shrink when
rows are deleted, so its own size could never come down to the limit. Over the limit, whole
hours go, oldest first, until what they held (rows and pictures) covers the excess.

A picture is deleted only when no kept row references it (names are content hashes, so two
rows may share one): the rows go first, then each of their pictures that no row still names.
A crash in between leaves files no row names; they count in the size and stay (harmless).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import sqlalchemy as sa

from daemon.records.pictures import Pictures
from daemon.records.rollup import HOUR_MS
from daemon.records.settings import RecordsSettings
from daemon.records.store import Store, now_ms
from daemon.records.tables import (
    frame_hours,
    frame_results,
    part_hours,
    part_verdicts,
    recipe_changes,
)

DAY_MS = 24 * HOUR_MS
FRAME_ROW_BYTES = 400
PART_ROW_BYTES = 600
_CHUNK = 20_000  # rows deleted per statement: short transactions beside the recorder's writes
_REF_CHUNK = 500


class PruneReport(NamedTuple):
    cutoff_ms: int | None  # rows that began before this went (None: none had to)
    frames: int  # frame result rows deleted (or that would be)
    parts: int  # part verdict rows deleted (or that would be)
    pictures: int  # picture files deleted (or that would be)
    freed_bytes: int  # bytes of those pictures
    rollup_rows: int  # rollup and recipe-switch rows deleted (or that would be)
    dry_run: bool

    @property
    def rows(self) -> int:
        return self.frames + self.parts


def _lines(conn: sa.Connection) -> list[str]:
    q = sa.union(sa.select(frame_hours.c.line).distinct(),
                 sa.select(part_hours.c.line).distinct(),
                 sa.select(part_verdicts.c.line).distinct())
    return sorted(r[0] for r in conn.execute(q))


def _oldest(conn: sa.Connection, lines: Iterable[str]) -> int | None:
    """The oldest row's time (per line, each on the line + time index)."""
    found = []
    for line in lines:
        for t in (frame_results, part_verdicts):
            v = conn.execute(sa.select(sa.func.min(t.c.ts_ms)).where(t.c.line == line)) \
                .scalar_one()
            if v is not None:
                found.append(v)
    return min(found, default=None)


def _refs_between(conn: sa.Connection, line: str, lo: int | None, hi: int) -> set[str]:
    f = frame_results
    q = sa.select(f.c.picture_ref, f.c.mask_ref).where(
        f.c.line == line, f.c.ts_ms < hi,
        sa.or_(f.c.picture_ref.is_not(None), f.c.mask_ref.is_not(None)))
    if lo is not None:
        q = q.where(f.c.ts_ms >= lo)
    return {ref for row in conn.execute(q) for ref in row if ref}


def _size_cutoff(conn: sa.Connection, pictures: Pictures, lines: list[str], max_bytes: int
                 ) -> int | None:
    """The time before which rows must go for the records to fit `max_bytes` (None: they
    fit)."""
    oldest = _oldest(conn, lines)
    if oldest is None:
        return None
    start = oldest // HOUR_MS * HOUR_MS
    hours: dict[int, int] = {}
    for t, row_bytes in ((frame_hours, FRAME_ROW_BYTES), (part_hours, PART_ROW_BYTES)):
        q = sa.select(t.c.hour_ms, sa.func.sum(t.c.total)).where(t.c.hour_ms >= start) \
            .group_by(t.c.hour_ms)
        for hour, n in conn.execute(q):
            hours[hour] = hours.get(hour, 0) + int(n) * row_bytes
    used = pictures.used_bytes() + sum(hours.values())
    excess = used - max_bytes
    if excess <= 0:
        return None
    freed = 0
    for hour in sorted(hours):
        freed += hours[hour] + sum(pictures.size(ref) for line in lines
                                   for ref in _refs_between(conn, line, hour, hour + HOUR_MS))
        if freed >= excess:
            return hour + HOUR_MS
    return max(hours) + HOUR_MS


def _still_named(conn: sa.Connection, refs: list[str], cutoff: int | None) -> set[str]:
    """Those of `refs` that a row at or after `cutoff` (every row: None) still names."""
    f = frame_results
    named: set[str] = set()
    for i in range(0, len(refs), _REF_CHUNK):
        chunk = refs[i:i + _REF_CHUNK]
        for column in (f.c.picture_ref, f.c.mask_ref):
            q = sa.select(column).where(column.in_(chunk)).distinct()
            if cutoff is not None:
                q = q.where(f.c.ts_ms >= cutoff)
            named.update(r[0] for r in conn.execute(q))
    return named


def _delete_before(conn: sa.Connection, table: sa.Table, line: str, cutoff: int) -> int:
    n = 0
    while True:
        ids = sa.select(table.c.id).where(table.c.line == line, table.c.ts_ms < cutoff) \
            .limit(_CHUNK).scalar_subquery()
        deleted = conn.execute(sa.delete(table).where(table.c.id.in_(ids))).rowcount
        conn.commit()
        n += deleted
        if deleted < _CHUNK:
            return n


def _count_before(conn: sa.Connection, table: sa.Table, line: str, cutoff: int) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(table).where(
        table.c.line == line, table.c.ts_ms < cutoff)).scalar_one()


def prune(store: Store, pictures: Pictures, settings: RecordsSettings | None = None,
          now: int | None = None, dry_run: bool = False) -> PruneReport:
    """Apply the retention once (`dry_run`: only say what it would delete)."""
    settings = settings or RecordsSettings()
    now = now_ms() if now is None else now
    with store.engine.connect() as conn:
        lines = _lines(conn)
        cutoffs = []
        if settings.records_days:
            cutoffs.append(now - round(settings.records_days * DAY_MS))
        if settings.records_max_gb:
            cutoffs.append(_size_cutoff(conn, pictures, lines,
                                        round(settings.records_max_gb * 1e9)))
        cutoff = max((c for c in cutoffs if c is not None), default=None)
        frames = parts = 0
        refs: set[str] = set()
        if cutoff is not None:
            for line in lines:
                refs |= _refs_between(conn, line, None, cutoff)
                count = _count_before if dry_run else _delete_before
                frames += count(conn, frame_results, line, cutoff)
                parts += count(conn, part_verdicts, line, cutoff)
        gone = sorted(refs - _still_named(conn, sorted(refs), cutoff if dry_run else None))
        rollup_rows = 0
        if settings.records_rollup_days:
            before = now - round(settings.records_rollup_days * DAY_MS)
            # the recipe switches (the audit trail) are kept as long as the rollups
            for t, column in ((frame_hours, frame_hours.c.hour_ms),
                              (part_hours, part_hours.c.hour_ms),
                              (recipe_changes, recipe_changes.c.ts_ms)):
                if dry_run:
                    rollup_rows += conn.execute(sa.select(sa.func.count()).select_from(t)
                                                .where(column < before)).scalar_one()
                else:
                    rollup_rows += conn.execute(sa.delete(t).where(column < before)).rowcount
            conn.commit()
    if dry_run:
        files, freed = len(gone), sum(pictures.size(ref) for ref in gone)
    else:
        files, freed = pictures.remove(gone)
        pictures.flush()
    return PruneReport(cutoff, frames, parts, files, freed, rollup_rows, dry_run)
