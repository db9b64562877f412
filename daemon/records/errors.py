"""The records' own errors: a database URL that is not one, a database that cannot be reached,
a schema older than the code. Each is one line for `rlrctl` (exit status 2), naming the setting
or command that fixes it."""

from __future__ import annotations

from daemon.errors import DaemonError


class RecordsError(DaemonError):
    """The records database cannot be used as configured (RLR_RECORDS_URL, a bad option)."""


class RecordsUnavailable(RecordsError):
    """The records database cannot be reached for now (down, refusing, locked)."""


class SchemaOutdated(RecordsError):
    """The database's schema is not the one this code writes: `rlrctl records migrate`."""
