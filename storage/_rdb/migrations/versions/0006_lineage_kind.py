"""Lineage kinds: a row is KD (``'kd'``: the teacher taught the trial) or the trial's init
parent (``'init'``: it started from the teacher's weights, ``init.from: best``).

Rows written before this revision are ``'kd'``. One teacher may be both a trial's init parent
and one of its KD teachers, so ``kind`` joins the unique key.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recycler_lineage") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="kd"))
        batch.drop_constraint("uq_recycler_lineage", type_="unique")
        batch.create_unique_constraint(
            "uq_recycler_lineage", ["study", "trial_number", "run", "teacher_id", "kind"]
        )


def downgrade() -> None:
    op.execute("DELETE FROM recycler_lineage WHERE kind <> 'kd'")
    with op.batch_alter_table("recycler_lineage") as batch:
        batch.drop_constraint("uq_recycler_lineage", type_="unique")
        batch.create_unique_constraint(
            "uq_recycler_lineage", ["study", "trial_number", "run", "teacher_id"]
        )
        batch.drop_column("kind")
