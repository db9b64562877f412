"""Migrations, idempotent writes and queries on SQLite and the real PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from daemon.records import queries, schema, tables
from daemon.records.store import Store
from tests.unit.daemon.records.reference import frame_rows, part_rows, rollups_and_raw_counts
from tests.unit.daemon.records.test_queries import check_yield


def test_migrations_up_from_empty_give_the_tables_of_tables_py(records_url):
    store = Store.open(url=records_url)
    assert schema.current(store.engine) is None
    assert store.migrate() == (None, schema.head())
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), tables.metadata) == []
    assert store.migrate() == (schema.head(), schema.head())
    store.close()


def test_a_batch_written_twice_is_stored_once(store):
    frames, parts = frame_rows(2000), part_rows(300)
    assert store.write(frames, parts) == (2000, 300)
    assert store.write(frames, parts) == (0, 0)
    assert store.write(frame_rows(2100), part_rows(301)) == (100, 1)
    with store.engine.connect() as conn:
        for table, n in ((tables.frame_results, 2100), (tables.part_verdicts, 301)):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == n


def test_queries_match_counts_in_python(store, tmp_path):
    frames, parts = frame_rows(3000), part_rows(800)
    store.write(frames, parts)
    check_yield(store, frames, parts)
    got = queries.part(store, "SN-5")["verdicts"]
    assert [(v["verdict"], v["views"], v["ts_ms"]) for v in got] == \
        [(parts[5]["verdict"], parts[5]["views"], parts[5]["ts_ms"])]
    assert sorted(f["frame_id"] for f in queries.part(store, "P9")["unjoined"]) == \
        sorted(f["frame_id"] for f in frames if f["part_id"] == "P9")
    assert queries.export(store, tmp_path / "x.csv", None, "csv", "parts") == len(parts)


def test_rollups_equal_the_raw_counts_after_replayed_batches(store):
    from tests.unit.daemon.records.test_rollup import check_rollups_after_replays

    check_rollups_after_replays(store)


NEW_IN_0003 = ("outcome", "missing", "product_class")


def old_part_rows(n: int) -> list[dict]:
    """Part rows as revisions 0001 / 0002 held them (no outcome; first capture not always
    known)."""
    rows = [{k: v for k, v in r.items() if k not in NEW_IN_0003} for r in part_rows(n)]
    for r in rows[::3]:
        r["first_ts_ms"] = None
    return rows


def test_migrations_0002_and_0003_roll_up_and_fill_in_the_rows_written_before(records_url):
    store = Store.open(url=records_url)
    schema.upgrade(store.engine, "0001")
    old = old_part_rows(120)
    with store.engine.begin() as conn:
        conn.execute(tables.frame_results.insert(), frame_rows(500))
        conn.execute(sa.text(
            "INSERT INTO part_verdicts (line, part_id, recipe, product, verdict, views, "
            "first_ts_ms, ts_ms, total_ms, entry_id, recorded_ms) VALUES (:line, :part_id, "
            ":recipe, :product, :verdict, '{}', :first_ts_ms, :ts_ms, :total_ms, :entry_id, "
            ":recorded_ms)"), [{k: v for k, v in r.items() if k != "views"} for r in old])
    schema.upgrade(store.engine, "0002")
    store.migrate()
    for got, want in rollups_and_raw_counts(store):
        assert got == want and got
    rows = {r["part_id"]: r for r in queries.parts(store, limit=1000)}
    for r in old:
        got = rows[r["part_id"]]
        assert got["first_ts_ms"] == (r["first_ts_ms"] or r["ts_ms"])
        assert got["outcome"] == ("pass" if r["verdict"] == "pass" else "reject")
    store.close()


def test_a_part_id_that_comes_back_after_a_wrap_around_is_another_part(store):
    from tests.unit.daemon.records.test_queries import check_wrapped_part_ids

    check_wrapped_part_ids(store)


def test_recipe_switches_are_stored_once(store):
    rows = [{"line": "l1", "ts_ms": 1000 + i, "action": "activated", "name": "r", "revision": i,
             "by": "anna", "via": "modbus", "why": None, "entry_id": f"{i}-0",
             "recorded_ms": 1} for i in range(5)]
    assert store.write_batch((), (), rows).recipes == 5
    assert store.write_batch((), (), [*rows[2:], {**rows[0], "entry_id": "9-0"}]).recipes == 1
    assert [r["revision"] for r in queries.recipes(store, "l1")] == [4, 3, 2, 1, 0, 0]


def test_retention_by_age_deletes_rows_with_their_pictures(store, tmp_path):
    from tests.unit.daemon.records.test_retention import check_age

    check_age(store, tmp_path)
