"""The records database: opened from RLR_RECORDS_URL (unset: a SQLite file under
RLR_RECORDS_DIR; `postgresql://` through psycopg 3), written in idempotent batches.

`insert_frames` / `insert_parts` write a batch in one transaction with `INSERT ... ON CONFLICT
DO NOTHING` on the tables' natural keys, so a batch written again (the recorder died after the
commit, before the ack) changes nothing. They return how many rows were new; the rows the
insert returns as new are added to the hourly rollups in the same transaction (`rollup`).
A database that is away raises `RecordsUnavailable`; the caller waits and writes the same
batch again.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from daemon.errors import RecordsError, RecordsUnavailable
from daemon.records import rollup, schema, tables
from daemon.records.settings import RecordsSettings

_SCHEMES = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "postgresql+psycopg": "postgresql+psycopg", "sqlite": "sqlite"}
_USAGE = "use postgresql://user[:password]@host[:port]/database or sqlite:///path/records.db"


def engine_url(raw: str) -> sa.URL:
    """The SQLAlchemy URL of an RLR_RECORDS_URL value; `RecordsError` when it is not one."""
    try:
        url = make_url(raw)
    except Exception:
        raise RecordsError(f"RLR_RECORDS_URL {raw!r} is not a database URL: {_USAGE}") from None
    driver = _SCHEMES.get(url.drivername)
    if driver is None:
        raise RecordsError(f"RLR_RECORDS_URL {shown(url)}: database {url.drivername!r} is not "
                           f"supported: {_USAGE}")
    if driver == "sqlite" and not url.database:
        raise RecordsError(f"RLR_RECORDS_URL {raw!r} names no file: {_USAGE}")
    return url.set(drivername=driver)


def shown(url: sa.URL | str) -> str:
    """The URL without its password, for messages and logs."""
    url = make_url(url) if isinstance(url, str) else url
    return url.render_as_string(hide_password=True).replace("postgresql+psycopg:", "postgresql:")


def create_engine(url: sa.URL) -> sa.Engine:
    if url.drivername == "sqlite":
        if url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            # WAL: readers (`rlrctl records`) never block the recorder's writes, and a commit
            # is one append; synchronous=NORMAL is still durable across a process crash.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


class Store:
    """One records database. `shown_url` is the URL without its password."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.shown_url = shown(engine.url)
        self._dialect = engine.dialect.name

    @classmethod
    def open(cls, settings: RecordsSettings | None = None, url: str | None = None) -> Store:
        """The database of `url` (or the settings' one) after checking that it answers:
        `RecordsError` (one line) for a bad URL or an unreachable server."""
        settings = settings or RecordsSettings()
        store = cls(create_engine(engine_url(url or settings.database_url)))
        store.ping()
        return store

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError as exc:
            raise RecordsUnavailable(f"records database {self.shown_url} cannot be reached: "
                                     f"{_first_line(exc)}; check RLR_RECORDS_URL") from None

    def require_schema(self, migrate: bool = False) -> str:
        return schema.require(self.engine, self.shown_url, migrate)

    def migrate(self) -> tuple[str | None, str]:
        return schema.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writing

    def insert_frames(self, rows: Sequence[dict[str, Any]]) -> int:
        """Write frame result rows (the columns of `tables.frame_results` less `id`); how
        many were new."""
        return self._insert(tables.frame_results, rows)

    def insert_parts(self, rows: Sequence[dict[str, Any]]) -> int:
        """Write part verdict rows (the columns of `tables.part_verdicts` less `id`); how
        many were new."""
        return self._insert(tables.part_verdicts, rows)

    def write(self, frames: Sequence[dict], parts: Sequence[dict]) -> tuple[int, int]:
        """Both kinds of rows in one transaction; (new frames, new parts)."""
        written = self.write_batch(frames, parts)
        return written.frames, written.parts

    def write_batch(self, frames: Sequence[dict], parts: Sequence[dict],
                    recipes: Sequence[dict] = ()) -> Written:
        """Frame, part and recipe-change rows in one transaction; how many of each were new."""
        try:
            with self.engine.begin() as conn:
                new_frames = self._insert_on(conn, tables.frame_results, frames)
                new_parts = self._insert_on(conn, tables.part_verdicts, parts)
                new_recipes = self._insert_on(conn, tables.recipe_changes, recipes)
                rollup.add_new_rows(conn, new_frames, new_parts)
                return Written(len(new_frames), len(new_parts), len(new_recipes))
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            if "no such table" in str(exc):  # SQLite says so as an operational error
                raise RecordsError(f"records database {self.shown_url} has no tables: run "
                                   "`rlrctl records migrate`") from None
            raise RecordsUnavailable(f"records database {self.shown_url}: "
                                     f"{_first_line(exc)}") from None

    def _insert(self, table: sa.Table, rows: Sequence[dict]) -> int:
        if table is tables.frame_results:
            return self.write(rows, ())[0]
        return self.write((), rows)[1]

    def _insert_on(self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict]
                   ) -> list[sa.RowMapping]:
        """Insert `rows`, skipping those already there; the new ones (their rollup columns)."""
        if not rows:
            return []
        if self._dialect == "postgresql":
            return _insert_unnest(conn, table, rows)
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=tables.KEYS[table.name])
        # RETURNING names the rows that were new (a conflict returns nothing): drivers' row
        # counts of a many-row insert are not reliable. SQLAlchemy sends the rows as a few
        # multi-row INSERTs ("insertmanyvalues").
        result = conn.execute(stmt.returning(*(table.c[c] for c in _RETURNED[table.name])),
                              list(rows))
        return list(result.mappings())


class Written(NamedTuple):
    frames: int
    parts: int
    recipes: int


_RETURNED = {tables.frame_results.name: rollup.FRAME_COLUMNS,
             tables.part_verdicts.name: rollup.PART_COLUMNS,
             tables.recipe_changes.name: ("id",)}


@functools.cache
def _unnest_statement(table: sa.Table) -> tuple[sa.TextClause, tuple[sa.Column, ...]]:
    columns = tuple(c for c in table.columns if not c.primary_key)
    dialect = postgresql.dialect()
    quote = dialect.identifier_preparer.quote  # a column may be a keyword (recipe_changes.by)
    arrays = ", ".join(f"CAST(:{c.name} AS {c.type.compile(dialect=dialect)}[])"
                       for c in columns)
    sql = (f"INSERT INTO {table.name} ({', '.join(quote(c.name) for c in columns)}) "
           f"SELECT * FROM unnest({arrays}) "
           f"ON CONFLICT ({', '.join(tables.KEYS[table.name])}) DO NOTHING "
           f"RETURNING {', '.join(_RETURNED[table.name])}")
    return sa.text(sql), columns


def _insert_unnest(conn: sa.Connection, table: sa.Table, rows: Sequence[dict]
                   ) -> list[sa.RowMapping]:
    """PostgreSQL: the batch as one array per column, unnested into rows by the server: one
    statement of a few parameters, some times faster than as many VALUES rows."""
    stmt, columns = _unnest_statement(table)
    params = {}
    for c in columns:
        values = [r.get(c.name) for r in rows]
        if isinstance(c.type, sa.JSON):
            values = [None if v is None else json.dumps(v) for v in values]
        params[c.name] = values
    return list(conn.execute(stmt, params).mappings())


def now_ms() -> int:
    return int(time.time() * 1000)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__
