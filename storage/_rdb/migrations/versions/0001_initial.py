"""The first registry schema: teachers and lineage.

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


def upgrade() -> None:
    op.create_table(
        "recycler_teachers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study", sa.String(512), nullable=False),
        sa.Column("trial_number", sa.Integer, nullable=False),
        sa.Column("trial_id", sa.String(512)),
        sa.Column("framework", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("metric_name", sa.String(255)),
        sa.Column("metric_value", sa.Float),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.Integer),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("trial_state", sa.String(32), nullable=False),
        sa.Column("output_signature", sa.String(1024), nullable=False),
        sa.Column("blob_key", sa.String(128), nullable=False),
        sa.Column("blob_uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("study", "trial_number", "step", "sha256", name="uq_recycler_teacher"),
    )
    op.create_index("ix_recycler_teachers_status", "recycler_teachers", ["status"])
    op.create_table(
        "recycler_lineage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study", sa.String(512), nullable=False),
        sa.Column("trial_number", sa.Integer, nullable=False),
        sa.Column("teacher_id", sa.Integer, sa.ForeignKey("recycler_teachers.id"), nullable=False),
        sa.Column("steps_distilled", sa.BigInteger, nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("overhead", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("study", "trial_number", "teacher_id", name="uq_recycler_lineage"),
    )
    op.create_index("ix_recycler_lineage_study", "recycler_lineage", ["study"])
    op.create_index("ix_recycler_lineage_teacher_id", "recycler_lineage", ["teacher_id"])


def downgrade() -> None:
    op.drop_table("recycler_lineage")
    op.drop_table("recycler_teachers")
