"""Runs received from child nodes: a dataset package's run, recorded at the receiving node.

A node's curated datasets hold its own runs and, on a parent node, the runs its children sent
up in ``dataset`` packages (:mod:`exchange.dataset_packages`). A received run keeps its id and
source; ``origin`` is the region code of the node where it was committed (empty for this node's
own runs) and ``dataset_id`` its dataset (a received source is not in this node's sources.yaml).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("origin", sa.String(6)))
        batch.add_column(sa.Column("dataset_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("dataset_id")
        batch.drop_column("origin")
