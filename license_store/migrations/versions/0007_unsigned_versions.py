"""The signer's work list: ``license_versions.signed`` and a partial index of the unsigned.

``sign_pending`` looked for versions without a proof with an anti-join over every version, so
each sync's signing step read the whole history (on 10 million versions, seconds per call). The
flag is set with the proof (by the signer, and by a replicated package's apply); the partial
index ``ix_license_versions_unsigned`` holds only the versions still to sign.

Flagging the versions that already have a proof must not rewrite the table: on a province store
that is hundreds of millions of rows (and as much free disk again). On PostgreSQL the column is
added with ``DEFAULT true``, which existing rows read without a rewrite (a "fast default"), the
default for new rows then becomes ``false``, and only the versions without a proof (the signer's
backlog: few) are updated. SQLite has no way to change a column's default in place, so there the
column comes with ``DEFAULT 0`` and the proved versions are updated (a county-sized store).

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


PROVED = (
    "EXISTS (SELECT 1 FROM license_proofs p WHERE p.license_base = license_versions.license_base "
    "AND p.version = license_versions.version)"
)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.add_column(
        "license_versions",
        sa.Column(
            "signed",
            sa.Boolean(),
            nullable=False,
            server_default=sa.true() if postgresql else sa.false(),
        ),
    )
    if postgresql:
        op.alter_column("license_versions", "signed", server_default=sa.false())
        op.execute("SET LOCAL work_mem = '256MB'")  # the anti-join of every version, once
        op.execute(f"UPDATE license_versions SET signed = false WHERE NOT {PROVED}")
    else:
        op.execute(f"UPDATE license_versions SET signed = 1 WHERE {PROVED}")
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
