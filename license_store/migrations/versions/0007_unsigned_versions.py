"""The signer's work list: ``license_versions.signed`` and a partial index of the unsigned.

``sign_pending`` looked for versions without a proof with an anti-join over every version, so
each sync's signing step read the whole history (on 10 million versions, seconds per call). The
flag is set with the proof (by the signer, and by a replicated package's apply); the partial
index ``ix_license_versions_unsigned`` holds only the versions still to sign.

The upgrade marks every version that has a proof: one pass over ``license_versions``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "license_versions",
        sa.Column("signed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(
        "UPDATE license_versions SET signed = "
        + ("true" if op.get_bind().dialect.name == "postgresql" else "1")
        + " WHERE EXISTS (SELECT 1 FROM license_proofs p "
        "WHERE p.license_base = license_versions.license_base "
        "AND p.version = license_versions.version)"
    )
    op.create_index(
        "ix_license_versions_unsigned",
        "license_versions",
        ["id"],
        postgresql_where=sa.text("NOT signed"),
        sqlite_where=sa.text("NOT signed"),
    )


def downgrade() -> None:
    op.drop_index("ix_license_versions_unsigned", table_name="license_versions")
    # Not a batch (a copy of the table on SQLite): dropping the old table would cascade to the
    # proofs. SQLite drops a column in place since 3.35.
    op.execute("ALTER TABLE license_versions DROP COLUMN signed")
