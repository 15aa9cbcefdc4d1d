"""Sync runs and source cursors.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
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
        "sync_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("full_refresh", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("landed_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("cursor_before", sa.JSON),
        sa.Column("cursor_after", sa.JSON),
        sa.Column("rows_read", sa.Integer),
        sa.Column("rows_loaded", sa.Integer),
        sa.Column("rows_quarantined", sa.Integer),
        sa.Column("licenses_inserted", sa.Integer),
        sa.Column("licenses_updated", sa.Integer),
        sa.Column("licenses_unchanged", sa.Integer),
        sa.Column("landing_path", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_sync_runs_source_started", "sync_runs", ["source_id", "started_at"])
    op.create_table(
        "source_cursors",
        sa.Column("source_id", sa.String(64), primary_key=True),
        sa.Column("cursor_value", sa.JSON),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("source_cursors")
    op.drop_index("ix_sync_runs_source_started", table_name="sync_runs")
    op.drop_table("sync_runs")
