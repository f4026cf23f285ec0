"""A registry identity: the name under which this registry holds references in a blob store.

Two registries may share one blob store (a shared volume, one S3 prefix, the default
``./recycler-teachers``). Each writes a reference per blob it uses under
``refs/<registry_id>/`` in the store, and ``gc`` never deletes a blob another registry
references. The id is a random UUID, made once here.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "recycler_meta",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(meta, [{"name": "registry_id", "value": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("recycler_meta")
