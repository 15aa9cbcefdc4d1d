"""Supervision cards: each source's current card, when it changed, and which alerts it still owes.

The quality monitor (``quality.monitor.check``) writes one row per source; a card change clears
the alert columns, and each channel's ``*_sent_at`` is set once that channel delivered it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_cards",
        sa.Column("source_id", sa.String(64), primary_key=True),
        sa.Column("card", sa.String(8), nullable=False),
        sa.Column("previous_card", sa.String(8)),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alert_due", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("webhook_sent_at", sa.DateTime(timezone=True)),
        sa.Column("email_sent_at", sa.DateTime(timezone=True)),
        sa.Column("alert_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("alert_error", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("source_cards")
