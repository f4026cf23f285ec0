"""Lineage per run: a study name reused (an in-memory Optuna study run twice, a restarted
sweep) never overwrites an earlier run's rows; the framework's own trial id is kept.

``run`` is the key of one run of a trial (``''`` on rows written before this revision);
``trial_id`` the framework's id (Ray's ``4cc34_00003``, Optuna's trial id).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recycler_lineage") as batch:
        batch.add_column(sa.Column("run", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("trial_id", sa.String(256)))
        batch.drop_constraint("uq_recycler_lineage", type_="unique")
        batch.create_unique_constraint(
            "uq_recycler_lineage", ["study", "trial_number", "run", "teacher_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("recycler_lineage") as batch:
        batch.drop_constraint("uq_recycler_lineage", type_="unique")
        batch.create_unique_constraint(
            "uq_recycler_lineage", ["study", "trial_number", "teacher_id"]
        )
        batch.drop_column("trial_id")
        batch.drop_column("run")
