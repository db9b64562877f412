"""Hourly rollups of frames and part verdicts (filled from the rows already there), and the
indexes retention uses to find the rows that still reference a picture.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

HOUR_MS = 3_600_000


def _rollup(name: str, source: str) -> None:
    op.create_table(
        name,
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column(source, sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("hour_ms", sa.BigInteger, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("rejects", sa.BigInteger, nullable=False),
        sa.Column("incomplete", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("line", source, "product", "hour_ms",
                            name=f"uq_{name}_line_{source}_product_hour_ms"),
    )
    op.create_index(f"ix_{name}_line_hour_ms", name, ["line", "hour_ms"])
    op.create_index(f"ix_{name}_hour_ms", name, ["hour_ms"])


def upgrade() -> None:
    _rollup("frame_hours", "camera")
    _rollup("part_hours", "recipe")
    op.create_index("ix_frame_results_picture_ref", "frame_results", ["picture_ref"])
    op.create_index("ix_frame_results_mask_ref", "frame_results", ["mask_ref"])
    # rows written by revision 0001 count too (integer division is the hour on both databases)
    op.execute(f"""
INSERT INTO frame_hours (line, camera, product, hour_ms, total, rejects, incomplete)
SELECT line, camera, COALESCE(product_class, ''), ts_ms / {HOUR_MS} * {HOUR_MS}, COUNT(*),
       SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END), 0
FROM frame_results GROUP BY line, camera, COALESCE(product_class, ''),
         ts_ms / {HOUR_MS} * {HOUR_MS}""")
    op.execute(f"""
INSERT INTO part_hours (line, recipe, product, hour_ms, total, rejects, incomplete)
SELECT line, COALESCE(recipe, ''), COALESCE(product, ''), ts_ms / {HOUR_MS} * {HOUR_MS},
       COUNT(*), SUM(CASE WHEN verdict = 'reject' THEN 1 ELSE 0 END),
       SUM(CASE WHEN verdict = 'incomplete' THEN 1 ELSE 0 END)
FROM part_verdicts
GROUP BY line, COALESCE(recipe, ''), COALESCE(product, ''), ts_ms / {HOUR_MS} * {HOUR_MS}""")


def downgrade() -> None:
    op.drop_index("ix_frame_results_mask_ref", "frame_results")
    op.drop_index("ix_frame_results_picture_ref", "frame_results")
    op.drop_table("part_hours")
    op.drop_table("frame_hours")
