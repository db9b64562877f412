"""Alembic migrations of the records database, run by `daemon.records.schema` (no alembic.ini
needed). A new revision: `alembic -c /dev/null -x ... revision` is not needed either; copy the
newest file in `versions/`, bump `revision` / `down_revision`, write `upgrade()`."""
