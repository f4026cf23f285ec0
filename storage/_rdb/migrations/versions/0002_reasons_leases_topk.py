"""Quarantine reasons, reader leases for gc, and indexes for top-k and checksum look-ups.

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


def upgrade() -> None:
    with op.batch_alter_table("recycler_teachers") as batch:
        batch.add_column(sa.Column("reason", sa.Text))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_recycler_teachers_study_status_metric",
        "recycler_teachers",
        ["study", "status", "metric_value"],
    )
    op.create_index("ix_recycler_teachers_sha256", "recycler_teachers", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_recycler_teachers_sha256", "recycler_teachers")
    op.drop_index("ix_recycler_teachers_study_status_metric", "recycler_teachers")
    with op.batch_alter_table("recycler_teachers") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("reason")
