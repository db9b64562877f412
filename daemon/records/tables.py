"""The records' schema as SQLAlchemy Core tables: one row per frame result, one per part
verdict. The Alembic migrations in `migrations/versions/` create exactly this (a test compares
them).

Times are integer milliseconds since the epoch (UTC): they sort, index and bucket the same way
on SQLite and PostgreSQL (`ts_ms // 3_600_000` is the hour on both), with no time zone
conversion inside the database. Each table has the natural key a writer repeats when it
writes a batch twice (line + camera + frame id; line + part id + the part's first capture
time, since a PLC's part counter wraps around and an id comes back; line + stream entry id for
recipe switches), so writes are `INSERT ... ON CONFLICT DO NOTHING` and a retried batch is
stored once.
"""

from __future__ import annotations

import sqlalchemy as sa

# SQLite makes only an INTEGER PRIMARY KEY the rowid alias (auto-numbered); BIGINT elsewhere.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

VERDICTS = ("pass", "reject", "incomplete")
OUTCOMES = ("pass", "reject")  # what the reject gate did (an incomplete part: either)
RECIPE_ACTIONS = ("activated", "refused")

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
})

frame_results = sa.Table(
    "frame_results", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("line", sa.String(128), nullable=False),
    sa.Column("camera", sa.String(128), nullable=False),
    sa.Column("frame_id", sa.String(128), nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),  # capture time
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("is_anomaly", sa.Boolean, nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("latency_ms", sa.Float),  # capture -> result published
    sa.Column("product_class", sa.String(128)),
    sa.Column("part_id", sa.String(128)),
    sa.Column("view", sa.String(128)),
    # where the frame's picture and mask are kept under the records folder (None: not kept)
    sa.Column("picture_ref", sa.String(255)),
    sa.Column("mask_ref", sa.String(255)),
    sa.Column("entry_id", sa.String(32), nullable=False),  # its id in rlr:results:{line}
    sa.Column("recorded_ms", sa.BigInteger, nullable=False),
    # a camera's frame ids are its own (keys.seen does the same): two cameras may both send "1"
    sa.UniqueConstraint("line", "camera", "frame_id"),
    # `records part ID`: every view of a part
    sa.Index(None, "part_id", "line"),
    # frames and yield by hour / shift / day of a line over time: is_anomaly in the index lets
    # the count read the index alone
    sa.Index(None, "line", "ts_ms", "is_anomaly"),
)

part_verdicts = sa.Table(
    "part_verdicts", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("line", sa.String(128), nullable=False),
    sa.Column("part_id", sa.String(128), nullable=False),
    sa.Column("recipe", sa.String(128)),
    sa.Column("product", sa.String(128)),
    sa.Column("verdict", sa.String(16), nullable=False),  # what the views said
    sa.Column("views", sa.JSON, nullable=False),  # view -> {camera, frame_id, score, ...}
    # the first view's capture time (its trigger): with line and part id, the part instance
    sa.Column("first_ts_ms", sa.BigInteger, nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),  # when the verdict was decided
    sa.Column("total_ms", sa.Float),  # first capture -> verdict
    sa.Column("entry_id", sa.String(32), nullable=False),  # its id in rlr:parts:{line}
    sa.Column("recorded_ms", sa.BigInteger, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # what the reject gate did
    sa.Column("missing", sa.Text),  # the views that never came, comma-joined (None: none)
    sa.Column("product_class", sa.String(128)),
    sa.CheckConstraint(f"verdict IN {VERDICTS!r}", name="verdict"),
    sa.CheckConstraint(f"outcome IN {OUTCOMES!r}", name="outcome"),
    sa.UniqueConstraint("line", "part_id", "first_ts_ms"),
    sa.Index(None, "part_id"),
    sa.Index(None, "line", "ts_ms", "verdict"),
)

# the natural key of each table: what ON CONFLICT names
KEYS = {frame_results.name: ("line", "camera", "frame_id"),
        part_verdicts.name: ("line", "part_id", "first_ts_ms")}

# Recipe switches of a line (`rlr:recipe:log:{line}`, written by `RecipeStore.activate`): the
# audit trail of who put which recipe revision in force, when and through what, and the
# refusals with their reason. Kept as long as the rollups (RLR_RECORDS_ROLLUP_DAYS).
recipe_changes = sa.Table(
    "recipe_changes", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("line", sa.String(128), nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # activated | refused
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("revision", sa.Integer),  # None: a refusal before a revision was known
    sa.Column("by", sa.String(128)),
    sa.Column("via", sa.String(128)),
    sa.Column("why", sa.Text),
    sa.Column("entry_id", sa.String(32), nullable=False),  # its id in the recipe log stream
    sa.Column("recorded_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("line", "entry_id"),
    sa.Index(None, "line", "ts_ms"),
)
KEYS[recipe_changes.name] = ("line", "entry_id")

# Hourly rollups: counts per line / camera / product / hour of frames and per line / recipe /
# product / hour of part verdicts, added to in the transaction that inserts the rows, from the
# rows the insert reports as new (so a batch written twice adds nothing). `records yield`
# reads them instead of the raw rows; retention keeps them (RLR_RECORDS_ROLLUP_DAYS) after the
# rows are gone. A missing product / recipe is '' (a key column cannot be NULL and conflict).
# For frames `rejects` is the anomalous frames and `incomplete` is 0. For parts `rejects` is
# the parts whose outcome was reject (an incomplete part rejected counts there too) and
# `incomplete` the parts whose verdict was incomplete, whatever their outcome.
frame_hours = sa.Table(
    "frame_hours", metadata,
    sa.Column("line", sa.String(128), nullable=False),
    sa.Column("camera", sa.String(128), nullable=False),
    sa.Column("product", sa.String(128), nullable=False),
    sa.Column("hour_ms", sa.BigInteger, nullable=False),  # where the UTC hour begins
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("rejects", sa.BigInteger, nullable=False),
    sa.Column("incomplete", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("line", "camera", "product", "hour_ms"),
    sa.Index(None, "line", "hour_ms"),
    sa.Index(None, "hour_ms"),
)

part_hours = sa.Table(
    "part_hours", metadata,
    sa.Column("line", sa.String(128), nullable=False),
    sa.Column("recipe", sa.String(128), nullable=False),
    sa.Column("product", sa.String(128), nullable=False),
    sa.Column("hour_ms", sa.BigInteger, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("rejects", sa.BigInteger, nullable=False),
    sa.Column("incomplete", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("line", "recipe", "product", "hour_ms"),
    sa.Index(None, "line", "hour_ms"),
    sa.Index(None, "hour_ms"),
)

# retention asks whether a picture it would delete is still referenced by a kept row
sa.Index("ix_frame_results_picture_ref", frame_results.c.picture_ref)
sa.Index("ix_frame_results_mask_ref", frame_results.c.mask_ref)

KEYS.update({frame_hours.name: ("line", "camera", "product", "hour_ms"),
             part_hours.name: ("line", "recipe", "product", "hour_ms")})
