"""Frame results and part verdicts, with the indexes of `records part` and `records yield`.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "frame_results",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column("camera", sa.String(128), nullable=False),
        sa.Column("frame_id", sa.String(128), nullable=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float),
        sa.Column("is_anomaly", sa.Boolean, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("product_class", sa.String(128)),
        sa.Column("part_id", sa.String(128)),
        sa.Column("view", sa.String(128)),
        sa.Column("picture_ref", sa.String(255)),
        sa.Column("mask_ref", sa.String(255)),
        sa.Column("entry_id", sa.String(32), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_frame_results"),
        sa.UniqueConstraint("line", "camera", "frame_id",
                            name="uq_frame_results_line_camera_frame_id"),
    )
    op.create_index("ix_frame_results_part_id_line", "frame_results", ["part_id", "line"])
    op.create_index("ix_frame_results_line_ts_ms_is_anomaly", "frame_results",
                    ["line", "ts_ms", "is_anomaly"])
    op.create_table(
        "part_verdicts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column("part_id", sa.String(128), nullable=False),
        sa.Column("recipe", sa.String(128)),
        sa.Column("product", sa.String(128)),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("views", sa.JSON, nullable=False),
        sa.Column("first_ts_ms", sa.BigInteger),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("total_ms", sa.Float),
        sa.Column("entry_id", sa.String(32), nullable=False),
        sa.Column("recorded_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_part_verdicts"),
        sa.CheckConstraint("verdict IN ('pass', 'reject', 'incomplete')",
                           name="ck_part_verdicts_verdict"),
        sa.UniqueConstraint("line", "part_id", name="uq_part_verdicts_line_part_id"),
    )
    op.create_index("ix_part_verdicts_part_id", "part_verdicts", ["part_id"])
    op.create_index("ix_part_verdicts_line_ts_ms_verdict", "part_verdicts",
                    ["line", "ts_ms", "verdict"])


def downgrade() -> None:
    op.drop_table("part_verdicts")
    op.drop_table("frame_results")
