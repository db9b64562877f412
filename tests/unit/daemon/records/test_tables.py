from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from daemon.records import schema, tables
from daemon.records.store import Store


def schema_differences(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), tables.metadata)


def test_the_migrations_create_exactly_the_tables_of_tables_py(tmp_path):
    store = Store.open(url=f"sqlite:///{tmp_path / 'r.db'}")
    assert schema.current(store.engine) is None
    assert store.migrate() == (None, schema.head())
    assert schema_differences(store.engine) == []


def test_each_table_has_the_natural_key_its_writes_conflict_on():
    for table in tables.metadata.sorted_tables:
        uniques = {tuple(c.name for c in u.columns) for u in table.constraints
                   if isinstance(u, sa.UniqueConstraint)}
        assert tables.KEYS[table.name] in uniques


def test_the_queries_indexes_exist(tmp_path):
    store = Store.open(url=f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    names = {ix["name"] for t in ("frame_results", "part_verdicts")
             for ix in sa.inspect(store.engine).get_indexes(t)}
    assert {"ix_frame_results_part_id_line", "ix_frame_results_line_ts_ms_is_anomaly",
            "ix_part_verdicts_part_id", "ix_part_verdicts_line_ts_ms_verdict"} <= names


def test_a_verdict_outside_pass_reject_incomplete_is_refused_by_the_database(store):
    import pytest

    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(tables.part_verdicts.insert(), {
            "line": "l", "part_id": "p", "verdict": "maybe", "views": {}, "ts_ms": 1,
            "entry_id": "1-0", "recorded_ms": 1})
