"""Records databases for integration tests: a SQLite file, and a PostgreSQL database of this
test session's own (`rlr_test_<random>` on 127.0.0.1:5432, created here and dropped at the
end; no other database is touched). Tests taking `records_url` run on both."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from daemon.records.store import Store

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _admin() -> sa.Engine:
    return sa.create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT",
                            connect_args={"connect_timeout": 3})


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database of this test session, dropped at its end."""
    admin = _admin()
    name = f"rlr_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({exc.orig})")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _empty(url: str) -> None:
    store = Store.open(url=url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS frame_results, part_verdicts, "
                             "frame_hours, part_hours, recipe_changes, alembic_version CASCADE"))
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request, tmp_path):
    """An empty records database (no schema yet), SQLite or PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.db'}"
        return
    url = request.getfixturevalue("pg_url")
    _empty(url)
    yield url
    _empty(url)


@pytest.fixture
def store(records_url):
    s = Store.open(url=records_url)
    s.require_schema()
    yield s
    s.close()
