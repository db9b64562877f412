"""The historian: every frame result and part verdict of the lines, kept in a database.

`rlrctl recorder` reads `rlr:results:{line}` (and `rlr:parts:{line}` where a line has one) in
its own consumer group and writes the entries in batches, keyed by line + camera + frame id and
line + part id, so a batch written twice (a recorder killed between commit and ack) is stored
once. SQLite is the embedded default, PostgreSQL the plant database; the schema is SQLAlchemy
Core (`tables`) versioned by the Alembic migrations shipped in `migrations/`. `queries` holds
the reads that `rlrctl records` and the console both call.

May import: `daemon.wire`, `rlr` and the top-level modules (`daemon.settings`, `daemon.errors`,
`daemon.logs`). No other daemon part; `daemon.cli` (and later the console) import it.
"""
