"""The schema's version: which Alembic revision a database is at, which one this code needs,
and the upgrade from one to the other, run in-process (no alembic.ini, no `alembic` command).

The recorder's rule at start (`require`): an empty database is created (nothing to lose); a
database at an older revision is refused with one line naming `rlrctl records migrate`, unless
the recorder was started with `--migrate` (RLR_RECORDS_MIGRATE=1), which upgrades it first.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from daemon.errors import SchemaOutdated

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision this code writes."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: sa.Engine) -> str | None:
    """The database's revision (None: never migrated, an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def known(revision: str) -> bool:
    """Whether `revision` is one of this code's migrations."""
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the database to `revision`; (revision before, revision after)."""
    before = current(engine)
    if before is not None and not known(before):
        url = engine.url.render_as_string(hide_password=True)
        raise SchemaOutdated(f"records database {url} is at schema revision {before}, newer "
                             f"than this rlr ({head()}): upgrade rlr")
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)
    return before, current(engine)


def require(engine: sa.Engine, shown_url: str, migrate: bool = False) -> str:
    """Make sure the database is at `head()` before writing: create an empty one, upgrade an
    old one when `migrate`, refuse otherwise (`SchemaOutdated`). The revision in use."""
    now, want = current(engine), head()
    if now == want:
        return now
    if now is None or migrate:
        return upgrade(engine)[1]
    if not known(now):
        raise SchemaOutdated(f"records database {shown_url} is at schema revision {now}, "
                             f"newer than this rlr ({want}): upgrade rlr")
    raise SchemaOutdated(f"records database {shown_url} is at schema revision {now}, this "
                         f"rlr writes {want}: run `rlrctl records migrate` (or start the "
                         "recorder with --migrate)")
