"""Alembic's environment for the records: runs on the connection `daemon.records.schema` hands
over in `config.attributes["connection"]` (online only; there is no offline SQL mode)."""

from __future__ import annotations

from alembic import context

from daemon.records.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
