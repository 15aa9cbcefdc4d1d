"""Signatures: signed Merkle batches of license versions and each version's inclusion proof.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signature_batches",
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("leaf_count", sa.Integer(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="pk_signature_batches"),
        sa.CheckConstraint("leaf_count >= 1", name="ck_signature_batches_leaf_count"),
    )
    op.create_table(
        "license_proofs",
        sa.Column("license_base", sa.String(160), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("leaf_index", sa.Integer(), nullable=False),
        sa.Column("proof", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("license_base", "version", name="pk_license_proofs"),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["signature_batches.batch_id"],
            name="fk_license_proofs_batch_id_signature_batches",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["license_base", "version"],
            ["license_versions.license_base", "license_versions.version"],
            name="fk_license_proofs_license_base_license_versions",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("license_proofs")
    op.drop_table("signature_batches")
