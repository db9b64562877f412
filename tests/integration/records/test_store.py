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
    assert sorted(f["frame_id"] for f in queries.part(store, "P9")["frames"]) == \
        sorted(f["frame_id"] for f in frames if f["part_id"] == "P9")
    assert queries.export(store, tmp_path / "x.csv", None, "csv", "parts") == len(parts)


def test_rollups_equal_the_raw_counts_after_replayed_batches(store):
    from tests.unit.daemon.records.test_rollup import check_rollups_after_replays

    check_rollups_after_replays(store)


def test_migration_0002_rolls_up_the_rows_written_before_it(records_url):
    store = Store.open(url=records_url)
    schema.upgrade(store.engine, "0001")
    with store.engine.begin() as conn:
        conn.execute(tables.frame_results.insert(), frame_rows(500))
        conn.execute(tables.part_verdicts.insert(), part_rows(120))
    store.migrate()
    for got, want in rollups_and_raw_counts(store):
        assert got == want and got
    store.close()


def test_retention_by_age_deletes_rows_with_their_pictures(store, tmp_path):
    from tests.unit.daemon.records.test_retention import check_age

    check_age(store, tmp_path)
