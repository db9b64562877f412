from __future__ import annotations

import pytest
import sqlalchemy as sa

from daemon.errors import SchemaOutdated
from daemon.records import schema
from daemon.records.store import Store


@pytest.fixture
def fresh(tmp_path):
    s = Store.open(url=f"sqlite:///{tmp_path / 'r.db'}")
    yield s
    s.close()


def test_an_empty_database_is_created_at_start(fresh):
    assert fresh.require_schema() == schema.head()
    assert {"frame_results", "part_verdicts"} <= set(sa.inspect(fresh.engine).get_table_names())


def test_an_old_schema_is_refused_with_the_command_that_upgrades_it(fresh, monkeypatch):
    fresh.migrate()
    monkeypatch.setattr(schema, "head", lambda: "0099")  # this code would write a newer one
    with pytest.raises(SchemaOutdated, match="rlrctl records migrate"):
        fresh.require_schema()


def test_migrate_on_start_upgrades_instead_of_refusing(fresh, monkeypatch):
    fresh.migrate()
    calls = []
    real = schema.upgrade
    monkeypatch.setattr(schema, "head", lambda: "0099")
    monkeypatch.setattr(schema, "upgrade", lambda engine: calls.append(1) or real(engine))
    fresh.require_schema(migrate=True)
    assert calls == [1]


def test_a_schema_newer_than_this_code_says_to_upgrade_rlr(fresh):
    fresh.migrate()
    with fresh.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    with pytest.raises(SchemaOutdated, match="newer than this rlr"):
        fresh.require_schema()


def test_migrating_twice_changes_nothing(fresh):
    head = schema.head()
    assert fresh.migrate() == (None, head)
    assert fresh.migrate() == (head, head)
