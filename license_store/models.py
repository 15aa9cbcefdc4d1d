"""The license store's tables (SQLAlchemy Core); the Alembic migrations create exactly these.

- ``licenses``: one row per license, its current version. The natural key is
  ``(type_code, holder_id, number)`` -- a marriage certificate has the same number for both
  spouses. ``license_base`` (the identifier without version and check) is the license's identity
  across versions; ``license_id`` is the current full identifier.
- ``license_versions``: every version ever stored, with its content as JSON (全程留痕、过往可溯).
- ``license_sequences``: the last serial used per ``(type_code, issuer_code, year)``.
- ``audit_log``: the hash-chained audit trail of reads and changes of personal data (gapless
  ``seq``; the holder only as a keyed digest and masked), see :mod:`license_store.audit`.
- ``audit_head``: one row, the chain's last ``seq`` and ``entry_hash``; appenders lock it.
- ``api_clients``: the systems that may call the API (OAuth2 client credentials), their grants
  (matters, license types, scopes), rate limit and hashed secret, see :mod:`license_store.clients`.
- ``signature_batches``: each Merkle batch of license versions a department signed (root,
  Ed25519 signature, key id); ``license_proofs``: every signed version's inclusion proof in its
  batch, see :mod:`license_store.signatures`.
- ``exchange_outbox``: the packages this node made for its parent (version-id ranges for
  ``licenses`` packages, a committed sync run for ``dataset`` packages), and
  ``exchange_inbox``: the last package applied from each child, see
  :mod:`license_store.replication`.

A test compares this metadata with the migrated schema, so a change here needs a migration.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from license_store.records import MAX_NUMBER_LENGTH

__all__ = [
    "api_clients",
    "audit_head",
    "audit_log",
    "exchange_inbox",
    "exchange_outbox",
    "license_proofs",
    "license_sequences",
    "license_versions",
    "licenses",
    "metadata",
    "signature_batches",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A 64-bit key on PostgreSQL, SQLite's rowid alias (INTEGER PRIMARY KEY) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

licenses = Table(
    "licenses",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("license_base", String(160), nullable=False, unique=True),
    Column("license_id", String(170), nullable=False, unique=True),
    Column("type_code", String(32), nullable=False),
    Column("type_name", Text, nullable=False),
    Column("issuer_code", String(18), nullable=False),
    Column("issuer_name", Text, nullable=False),
    Column("sequence", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("region_code", String(6), nullable=False),
    Column("holder_id", String(18), nullable=False),
    Column("holder_kind", String(8), nullable=False),
    Column("holder_name", Text, nullable=False),
    Column("number", String(MAX_NUMBER_LENGTH), nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("valid_from", Date, nullable=True),
    Column("valid_to", Date, nullable=True),
    Column("status", String(16), nullable=False),
    Column("face", JSON, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("source_id", String(64), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("type_code", "holder_id", "number"),
    CheckConstraint("status IN ('valid', 'expired', 'revoked', 'suspended')", name="status"),
    CheckConstraint("holder_kind IN ('natural', 'legal')", name="holder_kind"),
    CheckConstraint("version BETWEEN 1 AND 999", name="version"),
    # Lookup by holder, already in the order readers get: no sort step.
    Index("ix_licenses_holder_id", "holder_id", "type_code", "issue_date"),
)

license_versions = Table(
    "license_versions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "license_base",
        String(160),
        ForeignKey("licenses.license_base", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("version", Integer, nullable=False),
    # Derived from (license_base, version), whose uniqueness covers it: no second index.
    Column("license_id", String(170), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("content", JSON, nullable=False),
    Column("source_id", String(64), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # Whether the version has its proof in ``license_proofs``, set with the proof: the signer's
    # work list is the partial index of the versions without one, so finding them costs the
    # versions waiting, not the table (a scan for versions without a proof read every version).
    Column("signed", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("license_base", "version"),
    Index(
        "ix_license_versions_unsigned",
        "id",
        postgresql_where=text("NOT signed"),
        sqlite_where=text("NOT signed"),
    ),
)

license_sequences = Table(
    "license_sequences",
    metadata,
    Column("type_code", String(32), primary_key=True),
    Column("issuer_code", String(18), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("last_serial", Integer, nullable=False),
    CheckConstraint("last_serial BETWEEN 0 AND 9999999", name="last_serial"),
)

# The audit trail. ``seq`` is the chain position (1, 2, ...), assigned under the head row's lock.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("holder_masked", String(32), nullable=False),
    Column("holder_digest", String(64), nullable=False),
    Column("license_ids", JSON, nullable=False),
    Column("matter", String(64), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("result", String(16), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    # The holder's access log: by digest, newest first.
    Index("ix_audit_log_holder_digest", "holder_digest", "occurred_at"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("entry_hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# Callers of the API. Secrets are stored only as scrypt hashes; a revoked client keeps its row.
api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("department", String(64), nullable=True),
    Column("region", String(6), nullable=True),
    Column("matters", JSON, nullable=False),
    Column("license_types", JSON, nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("rate_limit", Float, nullable=True),
    Column("secret_hash", String(200), nullable=False),
    Column("secret_set_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("kind IN ('intake', 'portal', 'node', 'monitor')", name="kind"),
)

# Signatures (see :mod:`license_store.signatures`): one row per signed Merkle batch of versions.
signature_batches = Table(
    "signature_batches",
    metadata,
    Column("batch_id", String(32), primary_key=True),
    Column("department", String(64), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("algorithm", String(32), nullable=False),
    Column("root", String(64), nullable=False),  # hex
    Column("signature", String(128), nullable=False),  # base64
    Column("leaf_count", Integer, nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("leaf_count >= 1", name="leaf_count"),
)

# Each signed license version's inclusion proof in its batch; a version without a row is unsigned.
license_proofs = Table(
    "license_proofs",
    metadata,
    Column("license_base", String(160), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column(
        "batch_id",
        String(32),
        ForeignKey("signature_batches.batch_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("leaf_index", Integer, nullable=False),
    Column("proof", JSON, nullable=False),
    ForeignKeyConstraint(
        ["license_base", "version"],
        ["license_versions.license_base", "license_versions.version"],
        ondelete="CASCADE",
    ),
    # No index on batch_id: batches are never deleted, and each one would cost every insert.
)

# Replication between exchange nodes (see :mod:`license_store.replication`). The sender's plan:
# ``licenses`` package ``seq`` to its parent holds the versions with ``after_id <
# license_versions.id <= through_id`` (shareable types only), so a package whose files were lost
# is made again, the same; a ``dataset`` package holds the row versions file of sync run
# ``run_id`` (its ``after_id = through_id`` carry the license watermark on).
exchange_outbox = Table(
    "exchange_outbox",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("receiver", String(6), nullable=False),
    Column("after_id", BigInteger, nullable=False),
    Column("through_id", BigInteger, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("kind", String(16), nullable=False, server_default="licenses"),
    Column("run_id", String(64), nullable=True, unique=True),
    CheckConstraint(
        "(kind = 'licenses' AND after_id < through_id AND run_id IS NULL) OR "
        "(kind = 'dataset' AND after_id = through_id AND run_id IS NOT NULL)",
        name="id_range",
    ),
)

# The receiver's side: the last package applied from each child node, written in the same
# transaction as the package's rows (a replay is then recognised, a gap refused).
exchange_inbox = Table(
    "exchange_inbox",
    metadata,
    Column("sender", String(6), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=True),
)
