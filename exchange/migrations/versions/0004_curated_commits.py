"""Curated datasets: what each run committed to the curated layer, and when its licenses followed.

A run's row versions file and quarantine file become part of the lake in the same transaction
that marks the run succeeded and moves the cursor; license derivation is a follow-up step
recorded in ``licenses_published_at``. Runs that succeeded before this revision published their
licenses inside the run, so they count as published.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COUNTS = ("rows_new", "rows_changed", "rows_deleted", "rows_unchanged")


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("curated_path", sa.Text))
        batch.add_column(sa.Column("quarantine_path", sa.Text))
        for name in COUNTS:
            batch.add_column(sa.Column(name, sa.Integer))
        batch.add_column(sa.Column("licenses_published_at", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE sync_runs SET licenses_published_at = finished_at WHERE status = 'succeeded'"
    )


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("licenses_published_at")
        for name in reversed(COUNTS):
            batch.drop_column(name)
        batch.drop_column("quarantine_path")
        batch.drop_column("curated_path")
