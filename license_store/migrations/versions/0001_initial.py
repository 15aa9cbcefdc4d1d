"""Initial license store: licenses, their versions and the sequence counters.

Revision ID: 0001
Revises:
Create Date: 2026-05-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "licenses",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("license_base", sa.String(160), nullable=False),
        sa.Column("license_id", sa.String(170), nullable=False),
        sa.Column("type_code", sa.String(32), nullable=False),
        sa.Column("type_name", sa.Text(), nullable=False),
        sa.Column("issuer_code", sa.String(18), nullable=False),
        sa.Column("issuer_name", sa.Text(), nullable=False),
        sa.Column("sequence", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("region_code", sa.String(6), nullable=False),
        sa.Column("holder_id", sa.String(18), nullable=False),
        sa.Column("holder_kind", sa.String(8), nullable=False),
        sa.Column("holder_name", sa.Text(), nullable=False),
        sa.Column("number", sa.String(128), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("face", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_licenses"),
        sa.UniqueConstraint("license_base", name="uq_licenses_license_base"),
        sa.UniqueConstraint("license_id", name="uq_licenses_license_id"),
        sa.UniqueConstraint(
            "type_code", "holder_id", "number", name="uq_licenses_type_code_holder_id_number"
        ),
        sa.CheckConstraint(
            "status IN ('valid', 'expired', 'revoked', 'suspended')", name="ck_licenses_status"
        ),
        sa.CheckConstraint("holder_kind IN ('natural', 'legal')", name="ck_licenses_holder_kind"),
        sa.CheckConstraint("version BETWEEN 1 AND 999", name="ck_licenses_version"),
    )
    op.create_index("ix_licenses_holder_id", "licenses", ["holder_id", "type_code", "issue_date"])
    op.create_table(
        "license_versions",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("license_base", sa.String(160), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("license_id", sa.String(170), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_license_versions"),
        sa.ForeignKeyConstraint(
            ["license_base"],
            ["licenses.license_base"],
            name="fk_license_versions_license_base_licenses",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "license_base", "version", name="uq_license_versions_license_base_version"
        ),
    )
    op.create_table(
        "license_sequences",
        sa.Column("type_code", sa.String(32), nullable=False),
        sa.Column("issuer_code", sa.String(18), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last_serial", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("type_code", "issuer_code", "year", name="pk_license_sequences"),
        sa.CheckConstraint(
            "last_serial BETWEEN 0 AND 9999999", name="ck_license_sequences_last_serial"
        ),
    )


def downgrade() -> None:
    op.drop_table("license_sequences")
    op.drop_table("license_versions")
    op.drop_index("ix_licenses_holder_id", table_name="licenses")
    op.drop_table("licenses")
