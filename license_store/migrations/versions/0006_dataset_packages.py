"""Dataset packages: the outbox plans a package per committed sync run as well.

``exchange_outbox`` gains ``kind`` (``licenses`` or ``dataset``) and ``run_id`` (the sync run a
dataset package carries, planned once); the range check allows a dataset package's empty range.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RANGE = (
    "(kind = 'licenses' AND after_id < through_id AND run_id IS NULL) OR "
    "(kind = 'dataset' AND after_id = through_id AND run_id IS NOT NULL)"
)


def upgrade() -> None:
    with op.batch_alter_table("exchange_outbox") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="licenses")
        )
        batch.add_column(sa.Column("run_id", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_exchange_outbox_run_id", ["run_id"])
        batch.drop_constraint("ck_exchange_outbox_id_range", type_="check")
        batch.create_check_constraint("ck_exchange_outbox_id_range", RANGE)


def downgrade() -> None:
    op.execute("DELETE FROM exchange_outbox WHERE kind = 'dataset'")
    with op.batch_alter_table("exchange_outbox") as batch:
        batch.drop_constraint("ck_exchange_outbox_id_range", type_="check")
        batch.create_check_constraint("ck_exchange_outbox_id_range", "after_id < through_id")
        batch.drop_constraint("uq_exchange_outbox_run_id", type_="unique")
        batch.drop_column("run_id")
        batch.drop_column("kind")
