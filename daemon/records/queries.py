"""The reads of the records, called by `rlrctl records` and the console alike: parts of a line,
one part id's instances with every view, yield by hour / shift / day, frames, recipe switches,
and export to CSV or Parquet.

Each takes a `Store` and returns plain rows (dicts, `YieldRow`); times are milliseconds since
the epoch, as stored. Yield reads the hourly rollups; shifts and days are sums of hours, with
the plant's UTC offset (RLR_RECORDS_UTC_OFFSET_MIN) deciding where a day or shift begins.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from daemon.errors import RecordsError
from daemon.records import rollup
from daemon.records.settings import RecordsSettings
from daemon.records.store import Store
from daemon.records.tables import (
    OUTCOMES,
    VERDICTS,
    frame_hours,
    frame_results,
    part_hours,
    part_verdicts,
    recipe_changes,
)

BUCKETS = ("hour", "shift", "day")
FORMATS = ("csv", "parquet")
_HOUR_MS = 3_600_000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str | None, now_s: float | None = None) -> int | None:
    """`--since` as milliseconds since the epoch: a duration back from now (`90s`, `30m`,
    `8h`, `7d`, `2w`) or an ISO date / time (`2026-12-01`, `2026-12-01T06:00`, UTC unless it
    says otherwise). None stays None (no lower bound)."""
    if value is None or value == "":
        return None
    now_s = time.time() if now_s is None else now_s
    if m := _DURATION.match(value.strip()):
        return round((now_s - float(m[1]) * _UNIT_S[m[2]]) * 1000)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RecordsError(f"--since {value!r}: give a duration back from now (90s, 30m, 8h, "
                           "7d, 2w) or an ISO date or time (2026-12-01T06:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return round(when.timestamp() * 1000)


def _rows(store: Store, query: sa.Select) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def parts(store: Store, line: str | None = None, since_ms: int | None = None,
          verdict: str | None = None, limit: int = 100, outcome: str | None = None
          ) -> list[dict[str, Any]]:
    """Part verdicts, newest first (`verdict`: what the views said; `outcome`: what the gate
    did)."""
    if verdict is not None and verdict not in VERDICTS:
        raise RecordsError(f"verdict {verdict!r}: use one of {', '.join(VERDICTS)}")
    if outcome is not None and outcome not in OUTCOMES:
        raise RecordsError(f"outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
    t = part_verdicts
    q = _parts_where(sa.select(t), line, since_ms, verdict, outcome)
    return _rows(store, q.order_by(t.c.ts_ms.desc(), t.c.id.desc()).limit(limit))


def _parts_where(q: sa.Select, line, since_ms, verdict=None, outcome=None) -> sa.Select:
    t = part_verdicts
    for column, value in ((t.c.line, line), (t.c.verdict, verdict), (t.c.outcome, outcome)):
        if value is not None:
            q = q.where(column == value)
    return q if since_ms is None else q.where(t.c.ts_ms >= since_ms)


class PartCounts(NamedTuple):
    parts: int
    rejects: int  # the gate rejected them (outcome), incomplete ones included
    incomplete: int  # a view never came (verdict), whatever the gate did


def part_counts(store: Store, line: str | None = None, since_ms: int | None = None,
                verdict: str | None = None, outcome: str | None = None) -> PartCounts:
    """How many parts `parts` would list without its limit: rejects counted by outcome."""
    t = part_verdicts
    q = _parts_where(sa.select(
        sa.func.count(), sa.func.sum(sa.case((t.c.outcome == "reject", 1), else_=0)),
        sa.func.sum(sa.case((t.c.verdict == "incomplete", 1), else_=0))),
        line, since_ms, verdict, outcome)
    with store.engine.connect() as conn:
        n, rejects, incomplete = conn.execute(q).one()
    return PartCounts(int(n), int(rejects or 0), int(incomplete or 0))


def part(store: Store, part_id: str, line: str | None = None) -> dict[str, list[dict]]:
    """Every instance of a part id (a PLC's counter wraps around: the same id comes back as
    another part), newest first, each verdict with the frames of its views (`frames`); and
    the frames of the id that no verdict claims (`unjoined`: its verdict not recorded yet, or
    never decided).

    A frame belongs to the instance whose views name it (line, camera, frame id); one no
    view names (views recorded without them) to the instance of its line that was captured
    from at or before the frame and decided at or after it."""
    v, f = part_verdicts, frame_results
    qv = sa.select(v).where(v.c.part_id == part_id).order_by(v.c.first_ts_ms.desc(),
                                                             v.c.id.desc())
    qf = sa.select(f).where(f.c.part_id == part_id).order_by(f.c.ts_ms, f.c.camera)
    if line is not None:
        qv, qf = qv.where(v.c.line == line), qf.where(f.c.line == line)
    with store.engine.connect() as conn:  # one checkout: a round trip less per query
        verdicts = [dict(r._mapping) for r in conn.execute(qv)]
        frames_ = [dict(r._mapping) for r in conn.execute(qf)]
    unjoined: list[dict] = []
    named = {}
    for i, verdict in enumerate(verdicts):
        verdict["frames"] = []
        for view in (verdict["views"] or {}).values():
            if isinstance(view, dict) and view.get("frame_id") is not None:
                named[(verdict["line"], str(view.get("camera")), str(view["frame_id"]))] = i
    for frame in frames_:
        i = named.get((frame["line"], frame["camera"], frame["frame_id"]))
        if i is None:
            i = next((j for j, vd in enumerate(verdicts) if vd["line"] == frame["line"]
                      and vd["first_ts_ms"] <= frame["ts_ms"] <= vd["ts_ms"]), None)
        (unjoined if i is None else verdicts[i]["frames"]).append(frame)
    return {"verdicts": verdicts, "unjoined": unjoined}


def recipes(store: Store, line: str | None = None, since_ms: int | None = None,
            limit: int = 1000) -> list[dict[str, Any]]:
    """Recipe switches and refused switches, newest first: the audit trail."""
    t = recipe_changes
    q = sa.select(t).order_by(t.c.ts_ms.desc(), t.c.id.desc()).limit(limit)
    if line is not None:
        q = q.where(t.c.line == line)
    if since_ms is not None:
        q = q.where(t.c.ts_ms >= since_ms)
    return _rows(store, q)


def frames(store: Store, line: str | None = None, since_ms: int | None = None,
           camera: str | None = None, part_id: str | None = None,
           anomalous: bool | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Frame results, newest first."""
    t = frame_results
    q = sa.select(t).order_by(t.c.ts_ms.desc(), t.c.id.desc()).limit(limit)
    for column, value in ((t.c.line, line), (t.c.camera, camera), (t.c.part_id, part_id),
                          (t.c.is_anomaly, anomalous)):
        if value is not None:
            q = q.where(column == value)
    if since_ms is not None:
        q = q.where(t.c.ts_ms >= since_ms)
    return _rows(store, q)


class YieldRow(NamedTuple):
    line: str
    start_ms: int  # where the hour / shift / day begins
    parts: int  # parts (or frames) decided in it
    rejects: int  # parts the gate rejected (outcome), incomplete ones among them
    incomplete: int  # parts with a view missing (verdict incomplete), whatever the outcome

    @property
    def reject_rate(self) -> float:
        """Rejected share of the parts: rejects are counted by what the gate did, so an
        incomplete part rejected (the default) is in it, one let pass is not."""
        return self.rejects / self.parts if self.parts else 0.0


def bucket_span(by: str, settings: RecordsSettings | None = None) -> tuple[int, int]:
    """(size, shift) in milliseconds: bucket k of `by` covers
    [k * size + shift, (k + 1) * size + shift)."""
    settings = settings or RecordsSettings()
    if by not in BUCKETS:
        raise RecordsError(f"--by {by!r}: use one of {', '.join(BUCKETS)}")
    local = -settings.records_utc_offset_min * 60_000  # local midnight, in UTC terms
    if by == "hour":
        return _HOUR_MS, 0
    if by == "day":
        return 24 * _HOUR_MS, local
    return settings.records_shift_hours * _HOUR_MS, \
        local + settings.records_shift_start_h * _HOUR_MS


def yield_by(store: Store, line: str | None = None, by: str = "hour",
             since_ms: int | None = None, of: str = "parts",
             settings: RecordsSettings | None = None) -> list[YieldRow]:
    """Parts, rejects and incomplete parts per line and hour / shift / day, oldest first.
    `of="frames"` counts frame results instead (a reject: an anomalous frame), for lines
    that do not join frames into parts.

    Read from the hourly rollups (a few rows per hour, however many frames), summed into
    shifts and days here (`rollup.bucket_start`). `since_ms` counts whole hours: the hour in
    progress at `since_ms` is counted whole."""
    settings = settings or RecordsSettings()
    if by not in BUCKETS:
        raise RecordsError(f"--by {by!r}: use one of {', '.join(BUCKETS)}")
    if of not in ("parts", "frames"):
        raise RecordsError(f"yield of {of!r}: use parts or frames")
    t = part_hours if of == "parts" else frame_hours
    q = sa.select(t.c.line, t.c.hour_ms, sa.func.sum(t.c.total).label("n"),
                  sa.func.sum(t.c.rejects).label("rejects"),
                  sa.func.sum(t.c.incomplete).label("incomplete")) \
        .group_by(t.c.line, t.c.hour_ms)
    if line is not None:
        q = q.where(t.c.line == line)
    if since_ms is not None:
        q = q.where(t.c.hour_ms >= rollup.hour_of(since_ms))
    day_start = -settings.records_utc_offset_min * 60_000  # local midnight, in UTC terms
    sums: dict[tuple[int, str], list[int]] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(q):
            start = rollup.bucket_start(int(r.hour_ms), by, day_start,
                                        settings.records_shift_hours,
                                        settings.records_shift_start_h)
            counts = sums.setdefault((start, r.line), [0, 0, 0])
            counts[0] += int(r.n)
            counts[1] += int(r.rejects or 0)
            counts[2] += int(r.incomplete or 0)
    return [YieldRow(line_, start, *counts) for (start, line_), counts in sorted(sums.items())]


def export(store: Store, path: str | Path, since_ms: int | None = None, fmt: str = "csv",
           what: str = "frames", line: str | None = None, chunk: int = 10_000) -> int:
    """Write the frame results (or part verdicts) since `since_ms` to `path` as CSV or
    Parquet, oldest first, streamed in chunks; the number of rows written."""
    if fmt not in FORMATS:
        raise RecordsError(f"--format {fmt!r}: use csv or parquet")
    if what not in ("frames", "parts", "recipes"):
        raise RecordsError(f"export of {what!r}: use frames, parts or recipes")
    t = {"frames": frame_results, "parts": part_verdicts, "recipes": recipe_changes}[what]
    q = sa.select(t).order_by(t.c.ts_ms, t.c.id)
    if line is not None:
        q = q.where(t.c.line == line)
    if since_ms is not None:
        q = q.where(t.c.ts_ms >= since_ms)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise RecordsError("--format parquet needs pyarrow: pip install 'rlr[parquet]' "
                               "(or use --format csv)") from None
    columns = [c.name for c in t.columns]
    with store.engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk).execute(q)
        chunks = (list(map(tuple, part)) for part in result.partitions())
        write = _write_parquet if fmt == "parquet" else _write_csv
        return write(Path(path), columns, chunks, t)


def _write_csv(path: Path, columns: list[str], chunks: Iterator[list[tuple]],
               table: sa.Table) -> int:
    import json

    n = 0
    json_cols = {i for i, c in enumerate(table.columns) if isinstance(c.type, sa.JSON)}
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for rows in chunks:
            for row in rows:
                writer.writerow([json.dumps(v) if i in json_cols else v
                                 for i, v in enumerate(row)])
            n += len(rows)
    return n


def _write_parquet(path: Path, columns: list[str], chunks: Iterator[list[tuple]],
                   table: sa.Table) -> int:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    def arrow_type(column: sa.Column) -> pa.DataType:
        if isinstance(column.type, sa.Boolean):
            return pa.bool_()
        if isinstance(column.type, sa.Integer):
            return pa.int64()
        if isinstance(column.type, sa.Float):
            return pa.float64()
        return pa.string()  # text, and JSON as its text

    schema = pa.schema([(c.name, arrow_type(c)) for c in table.columns])
    json_cols = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
    n = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        for rows in chunks:
            data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
            for c in json_cols:
                data[c] = [json.dumps(v) for v in data[c]]
            writer.write_table(pa.table(data, schema=schema))
            n += len(rows)
    return n
