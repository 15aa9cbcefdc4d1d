"""Schema drift: what changed in a run's columns, and each source's accepted schema.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("schema_drift", sa.JSON))
    with op.batch_alter_table("source_cursors") as batch:
        batch.add_column(sa.Column("accepted_schema", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("source_cursors") as batch:
        batch.drop_column("accepted_schema")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("schema_drift")
