"""Part instances (a part id that comes back after the PLC's counter wrapped is a new row: the
key is line + part id + first capture time), what the reject gate did (`outcome`), the views
that never came (`missing`), the product class, and the recipe switches of the lines.

Rows written before: `first_ts_ms` is their decision time where it was not known, `outcome`
what the gate does by default (reject unless the verdict was pass), and the part rollups'
rejects count the incomplete parts too (rejects are counted by outcome from now on).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _part_columns() -> None:
    op.execute("UPDATE part_verdicts SET first_ts_ms = ts_ms WHERE first_ts_ms IS NULL")
    with op.batch_alter_table("part_verdicts") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("missing", sa.Text))
        batch.add_column(sa.Column("product_class", sa.String(128)))
    op.execute("UPDATE part_verdicts SET outcome = CASE WHEN verdict = 'pass' THEN 'pass' "
               "ELSE 'reject' END")
    with op.batch_alter_table("part_verdicts") as batch:
        batch.alter_column("outcome", existing_type=sa.String(16), nullable=False)
        batch.alter_column("first_ts_ms", existing_type=sa.BigInteger, nullable=False)
        batch.drop_constraint("uq_part_verdicts_line_part_id", type_="unique")
        batch.create_unique_constraint("uq_part_verdicts_line_part_id_first_ts_ms",
                                       ["line", "part_id", "first_ts_ms"])
        batch.create_check_constraint("ck_part_verdicts_outcome",
                                      sa.text("outcome IN ('pass', 'reject')"))


def upgrade() -> None:
    _part_columns()
    # the hours rolled up before counted rejects by verdict; by outcome, the incomplete parts
    # (rejected by default, as their rows' outcome says now) are rejects too
    op.execute("UPDATE part_hours SET rejects = rejects + incomplete")
    op.create_table(
        "recipe_changes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("revision", sa.Integer),
        sa.Column("by", sa.String(128)),
        sa.Column("via", sa.String(128)),
        sa.Column("why", sa.Text),
        sa.Column("entry_id", sa.String(32), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_recipe_changes"),
        sa.UniqueConstraint("line", "entry_id", name="uq_recipe_changes_line_entry_id"),
    )
    op.create_index("ix_recipe_changes_line_ts_ms", "recipe_changes", ["line", "ts_ms"])


def downgrade() -> None:
    op.drop_table("recipe_changes")
    op.execute("UPDATE part_hours SET rejects = rejects - incomplete")
    with op.batch_alter_table("part_verdicts") as batch:
        batch.drop_constraint("ck_part_verdicts_outcome", type_="check")
        batch.drop_constraint("uq_part_verdicts_line_part_id_first_ts_ms", type_="unique")
        batch.create_unique_constraint("uq_part_verdicts_line_part_id", ["line", "part_id"])
        batch.alter_column("first_ts_ms", existing_type=sa.BigInteger, nullable=True)
        batch.drop_column("product_class")
        batch.drop_column("missing")
        batch.drop_column("outcome")
