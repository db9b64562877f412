"""Records: recorder throughput into SQLite and PostgreSQL, and query times over generated rows.

1. Throughput: `--results` frames are put on a line of its own in the real Redis as the worker
   leaves them (frame entry, dedup key, result, a mask on the 5 % anomalous), then a
   `Recorder` (the code `rlrctl recorder` runs, in this process) reads, writes and acks them
   all, in batches of RLR_RECORDS_BATCH, keeping the pictures of the anomalous frames and of
   1 % of the passes; frame results per second, from the first read to the last ack. Once
   into a SQLite file, once into a PostgreSQL database of its own.
2. Queries: `--rows` frame results (7 days of one line, 4 cameras, a part per 4 frames) and a
   part verdict per part are generated inside the database, their hourly rollups made from
   them in SQL (the recorder keeps them as it writes; rows generated in SQL bypass it), then
   `records part ID` and `records yield --by hour` (of frames and of parts, read from the
   rollups) over the 7 days are timed (best of 3).
   The target is 18 million frame rows (a 30 fps line for 7 days); the count used is printed.
3. The retention's size check: `--pictures` small files are kept in a pictures folder (through
   `Pictures.put`, as the recorder keeps them), then the folder's bytes are read by a full walk
   (what each retention run did before) and from the running tally (what it does now, after
   the walk at the recorder's start), best of 3 each.

    python benchmarks/records.py [--results 50000] [--rows 18000000] [--sqlite-rows 1000000]
                                 [--pictures 200000]

Needs Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 (user postgres, trust); the
PostgreSQL database (rlr_bench_<random>) is created and dropped here.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

from daemon.records import queries, rollup
from daemon.records.pictures import Pictures
from daemon.records.recorder import Recorder, RecorderStats
from daemon.records.settings import RecordsSettings
from daemon.records.store import Store
from daemon.wire import keys
from daemon.wire.schema import Result, encode_frame

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
T0_MS = 1_796_601_600_000
WEEK_MS = 7 * 86_400_000

FRAMES_SQL = {
    "postgresql": """
INSERT INTO frame_results (line, camera, frame_id, ts_ms, score, threshold, is_anomaly,
    model_version, latency_ms, product_class, part_id, view, entry_id, recorded_ms)
SELECT 'bench', 'cam' || (g % 4), g::text, :t0 + g * :step, random(), 0.9, random() < 0.05,
    'v1', 20.0, 'bottle', 'SN-' || (g / 4), 'view' || (g % 4), g || '-0', :t0
FROM generate_series(0::bigint, :n - 1) AS g""",
    "sqlite": """
INSERT INTO frame_results (line, camera, frame_id, ts_ms, score, threshold, is_anomaly,
    model_version, latency_ms, product_class, part_id, view, entry_id, recorded_ms)
WITH RECURSIVE s(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM s WHERE g < :n - 1)
SELECT 'bench', 'cam' || (g % 4), CAST(g AS TEXT), :t0 + g * :step, abs(random() % 1000) / 1e3,
    0.9, abs(random() % 100) < 5, 'v1', 20.0, 'bottle', 'SN-' || (g / 4), 'view' || (g % 4),
    g || '-0', :t0
FROM s""",
}

PARTS_SQL = """
INSERT INTO part_verdicts (line, part_id, recipe, product, verdict, outcome, views, first_ts_ms,
    ts_ms, total_ms, entry_id, recorded_ms)
SELECT 'bench', 'SN-' || (g / 4), 'r1', 'bottle',
    CASE WHEN bool_or(is_anomaly) THEN 'reject' ELSE 'pass' END,
    CASE WHEN bool_or(is_anomaly) THEN 'reject' ELSE 'pass' END, '{}', min(ts_ms), max(ts_ms),
    40.0, min(entry_id), :t0
FROM (SELECT CAST(frame_id AS BIGINT) AS g, is_anomaly, ts_ms, entry_id FROM frame_results) f
GROUP BY g / 4"""
PARTS_SQL_SQLITE = PARTS_SQL.replace("bool_or(is_anomaly)", "max(is_anomaly) = 1")


def throughput(store: Store, client: redis.Redis, n: int, batch: int, folder: Path
               ) -> tuple[float, RecorderStats]:
    """What the worker leaves for each frame (the frame entry, its dedup key, its result, a
    mask on the anomalous 5 %), then the recorder over all of it: rows, and the pictures of
    the anomalous frames and of 1 % of the passes written under `folder`."""
    line = f"bench{uuid.uuid4().hex[:8]}"
    pipe = client.pipeline(transaction=False)
    rng = random.Random(1)
    for i in range(n):
        anomalous = i % 20 == 0
        frame = encode_frame(f"cam{i % 4}", f"f{i}", 1_796_601_600 + i / 30,
                             rng.randbytes(2048), "jpeg")
        pipe.xadd(keys.frames(line), frame, id=f"{i + 1}-0")
        r = Result(f"f{i}", f"cam{i % 4}", 0.5, anomalous, 0.9, "v1", 1_796_601_600 + i / 30,
                   1.0, 2.0, 20.0, "w1", "bottle", rng.randbytes(1024) if anomalous else None)
        pipe.xadd(keys.results(line), r.to_fields(), id=f"{i + 1}-0")
        pipe.set(keys.seen(line, f"cam{i % 4}", f"f{i}"), f"{i + 1}-0 {i + 1}-0", ex=3600)
        if len(pipe) >= 3000:
            pipe.execute()
    pipe.execute()
    rec = Recorder(client, store, [line], RecordsSettings(records_batch=batch,
                                                          records_consumer="bench",
                                                          records_dir=folder))
    try:
        t = time.perf_counter()
        rec.run_until_idle()
        elapsed = time.perf_counter() - t
        assert rec.stats.frames == n, rec.stats
    finally:
        client.delete(keys.results(line), keys.frames(line))
        for i in range(0, n, 1000):
            client.delete(*(keys.seen(line, f"cam{j % 4}", f"f{j}")
                            for j in range(i, min(i + 1000, n))))
    return n / elapsed, rec.stats


def best_ms(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return min(times)


def query_times(store: Store, rows: int) -> dict[str, float]:
    dialect = store.engine.dialect.name
    step = max(WEEK_MS // rows, 1)
    t = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(sa.text(FRAMES_SQL[dialect]), {"t0": T0_MS, "step": step, "n": rows})
        parts_sql = PARTS_SQL if dialect == "postgresql" else PARTS_SQL_SQLITE
        conn.execute(sa.text(parts_sql), {"t0": T0_MS})
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))
    generated = time.perf_counter() - t
    # rows generated in SQL bypass the store, whose writes keep the rollups: made here once
    t = time.perf_counter()
    with store.engine.begin() as conn:
        rollup.rebuild(conn)
        hours = conn.execute(sa.text("SELECT count(*) FROM frame_hours")).scalar_one()
    rolled = time.perf_counter() - t
    pid = f"SN-{rows // 8}"
    assert len(queries.part(store, pid)["verdicts"][0]["frames"]) == 4
    return {
        "generate_s": generated, "rollup_s": rolled, "rollup_rows": hours,
        "part_ms": best_ms(lambda: queries.part(store, pid)),
        "yield_hour_frames_ms": best_ms(
            lambda: queries.yield_by(store, "bench", "hour", T0_MS, "frames")),
        "yield_hour_parts_ms": best_ms(
            lambda: queries.yield_by(store, "bench", "hour", T0_MS, "parts")),
    }


def size_check(n: int) -> None:
    """The pictures folder's bytes by a full walk and from the tally, over `n` small files."""
    folder = tempfile.mkdtemp(prefix="rlr-bench-pictures-")
    try:
        pics = Pictures(folder)
        t = time.perf_counter()
        for i in range(n):
            pics.put(i.to_bytes(8, "big") * 32, ".png")  # 256 bytes each
        pics.flush()
        kept = time.perf_counter() - t
        first = best_ms(pics.used_bytes, 1)  # the walk at the recorder's start
        walk = best_ms(pics.total_bytes)
        tally = best_ms(pics.used_bytes)
        assert pics.used_bytes() == pics.total_bytes() == n * 256
        print(f"pictures   size check over {n:,} files ({n * 256 / 1e6:.0f} MB, kept in "
              f"{kept:.0f} s): full walk {walk:,.0f} ms (each retention run before; once at "
              f"start now: {first:,.0f} ms), tally {tally:.2f} ms", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(name: str, url: str, args, client: redis.Redis, rows: int) -> None:
    store = Store.open(url=url)
    store.require_schema()
    with tempfile.TemporaryDirectory() as folder:
        rate, stats = throughput(store, client, args.results, args.batch, Path(folder))
    print(f"{name:10} recorder: {rate:,.0f} frame results/s ({args.results:,} results, "
          f"batch {args.batch}; {stats.pictures:,} frames kept with their pictures, "
          f"{stats.pictures_missing} missing)", flush=True)
    if rows == 0:
        return store.close()
    with store.engine.begin() as conn:
        for table in ("frame_results", "frame_hours", "part_hours"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    q = query_times(store, rows)
    print(f"{name:10} queries over {rows:,} frame rows + {rows // 4:,} parts (generated in "
          f"{q['generate_s']:.0f} s; rolled up in SQL into {q['rollup_rows']:,} frame hours in "
          f"{q['rollup_s']:.1f} s): part {q['part_ms']:.1f} ms, yield --by hour "
          f"{q['yield_hour_frames_ms']:.0f} ms (frames), {q['yield_hour_parts_ms']:.0f} ms "
          "(parts)", flush=True)
    store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--rows", type=int, default=18_000_000, help="frame rows for PostgreSQL "
                   "(0: throughput only)")
    p.add_argument("--sqlite-rows", type=int, default=1_000_000)
    p.add_argument("--pictures", type=int, default=200_000, help="files for the size check "
                   "(0: skip it)")
    p.add_argument("--skip", choices=("sqlite", "postgresql"), action="append", default=[])
    args = p.parse_args()
    if args.pictures:
        size_check(args.pictures)
    client = redis.Redis()
    if "sqlite" not in args.skip:
        with tempfile.TemporaryDirectory() as d:
            run("SQLite", f"sqlite:///{Path(d) / 'records.db'}", args, client,
                args.sqlite_rows)
    if "postgresql" not in args.skip:
        admin = sa.create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
        db = f"rlr_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
        try:
            run("PostgreSQL", f"postgresql://postgres@127.0.0.1:5432/{db}", args, client,
                args.rows)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
