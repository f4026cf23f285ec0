"""A direction-aware rank score, so top-k is an index scan instead of a sort of the study.

``score`` is the metric for maximize rows and minus the metric for minimize rows (NULL without
a metric): the best teachers are the largest scores whatever each row's direction.

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


def upgrade() -> None:
    with op.batch_alter_table("recycler_teachers") as batch:
        batch.add_column(sa.Column("score", sa.Float))
    op.execute(
        "UPDATE recycler_teachers SET score = CASE WHEN direction = 'minimize' "
        "THEN -metric_value ELSE metric_value END"
    )
    op.create_index(
        "ix_recycler_teachers_study_status_score",
        "recycler_teachers",
        ["study", "status", "score"],
    )
    op.create_index("ix_recycler_teachers_status_score", "recycler_teachers", ["status", "score"])


def downgrade() -> None:
    op.drop_index("ix_recycler_teachers_status_score", "recycler_teachers")
    op.drop_index("ix_recycler_teachers_study_status_score", "recycler_teachers")
    with op.batch_alter_table("recycler_teachers") as batch:
        batch.drop_column("score")
