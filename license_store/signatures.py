"""Stored signatures of license versions: which department signs what, batches and proofs in SQL.

:mod:`license_store.signing` holds the cryptography (keys, Merkle trees, offline verification);
this module connects it to the store's tables. :meth:`license_store.LicenseStore.sign_pending`
finds every license version without a proof (``license_proofs``), groups them by the department
that signs them (:class:`DepartmentResolver`), signs each group as one Merkle batch with the
department's key and writes the batch (``signature_batches``) and its proofs in one transaction.
A version is therefore either fully signed or not at all, and a re-run signs only what is left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, and_, cast, not_, select, update
from sqlalchemy.engine import Connection, Row

from license_store.database import JSONText, bulk_insert
from license_store.models import license_proofs, license_versions, licenses, signature_batches
from license_store.signing import (
    BatchSignature,
    KeyFileError,
    KeyRing,
    ProofStep,
    leaf_hash,
    merkle_root_and_paths,
    sign_root,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from exchange.config import Deployment

__all__ = [
    "CHUNK_VERSIONS",
    "MAX_BATCH_LEAVES",
    "DepartmentResolver",
    "SigningResult",
    "StoredSignature",
    "decode_proof",
    "group_by_department",
    "select_unsigned",
    "sign_versions",
    "signer_key",
    "stored_signature",
    "write_batch",
]

log = logging.getLogger("govexchange.license_store.signatures")

# Leaves per Merkle batch: a proof of 12 hashes (~800 bytes stored per version) for one
# signature per 4,096 versions (~7 ns of Ed25519 per version). Larger batches only grow proofs.
MAX_BATCH_LEAVES = 4_096
# Versions read, signed and written per transaction (several batches).
CHUNK_VERSIONS = 8 * MAX_BATCH_LEAVES


@dataclass(frozen=True, slots=True)
class SigningResult:
    """What a signing pass did: versions signed, batches written, versions left without a signer."""

    signed: int = 0
    batches: int = 0
    no_department: int = 0

    def __add__(self, other: SigningResult) -> SigningResult:
        return SigningResult(
            self.signed + other.signed,
            self.batches + other.batches,
            self.no_department + other.no_department,
        )


class DepartmentResolver:
    """The department that signs a license: its issuer's department, else its type's issuer.

    A license's issuer code is the credit code of the department whose system it came from
    (``departments[].code``); a license whose issuer is not a configured department is signed
    by its type's ``issuing_department``. ``None`` when neither is configured.
    """

    def __init__(self, deployment: Deployment) -> None:
        self._by_issuer = {department.code: department.id for department in deployment.departments}
        self._by_type = {ltype.code: ltype.issuing_department for ltype in deployment.license_types}

    def department(self, type_code: str, issuer_code: str) -> str | None:
        return self._by_issuer.get(issuer_code) or self._by_type.get(type_code)


def signer_key(keyring: KeyRing, department: str) -> Ed25519PrivateKey:
    """The department's private key; generated (with a WARNING) when it has none yet."""
    if not keyring.public_path(department).exists():
        log.warning(
            "department %s had no signing key: generated one in %s "
            "(export its public key with `govx keys export %s`)",
            department,
            keyring.directory,
            department,
        )
        # KeyFileError: another signer generated it first, or only the public key was missing
        with contextlib.suppress(KeyFileError):
            keyring.generate(department)
    return keyring.private_key(department)


def select_unsigned(conn: Connection, *, after: int, limit: int) -> list[Row[Any]]:
    """Up to ``limit`` versions without a proof, ``license_versions.id > after``, by id.

    ``content_text`` is the version's content as stored: the store writes it as canonical JSON
    (:func:`license_store.records.canonical_json`), the very bytes that are signed, so it is
    hashed as is instead of being decoded and encoded again.
    """
    statement = (
        select(
            license_versions.c.id,
            license_versions.c.license_base,
            license_versions.c.version,
            cast(license_versions.c.content, Text).label("content_text"),
            licenses.c.type_code,
            licenses.c.issuer_code,
        )
        .join(licenses, licenses.c.license_base == license_versions.c.license_base)
        .outerjoin(
            license_proofs,
            and_(
                license_proofs.c.license_base == license_versions.c.license_base,
                license_proofs.c.version == license_versions.c.version,
            ),
        )
        .where(
            license_versions.c.id > after,
            not_(license_versions.c.signed),  # the partial index: the waiting versions only
            license_proofs.c.license_base.is_(None),
        )
        .order_by(license_versions.c.id)
        .limit(limit)
    )
    return list(conn.execute(statement))


def decode_proof(stored: Sequence[str]) -> list[ProofStep]:
    """A stored proof (JSON list of ``"L<hex>"``/``"R<hex>"`` steps) as proof steps."""
    return [ProofStep(side=text[0], hash=text[1:]) for text in stored]


def sign_versions(
    department: str, key: Ed25519PrivateKey, rows: Sequence[Row[Any]]
) -> tuple[BatchSignature, list[list[str]]]:
    """Sign the versions' canonical contents as one Merkle batch of ``department``.

    Returns the batch signature and each version's proof as compact steps (``"L<hex>"``).
    """
    leaves = [leaf_hash(row.content_text.encode("utf-8")) for row in rows]
    root, paths = merkle_root_and_paths(leaves)
    return sign_root(department, key, root, len(leaves)), paths


def write_batch(
    conn: Connection,
    batch: BatchSignature,
    rows: Sequence[Row[Any]],
    proofs: Sequence[Sequence[str]],
) -> str:
    """Insert the batch and every version's proof, and mark the versions signed (the caller's
    transaction); returns the batch's id."""
    batch_id = uuid.uuid4().hex
    conn.execute(
        signature_batches.insert().values(
            batch_id=batch_id,
            department=batch.issuer,
            key_id=batch.key_id,
            algorithm=batch.algorithm,
            root=batch.root,
            signature=batch.signature,
            leaf_count=batch.leaves,
            signed_at=dt.datetime.fromisoformat(batch.signed_at),
        )
    )
    bulk_insert(
        conn,
        license_proofs,
        {
            "license_base": [row.license_base for row in rows],
            "version": [row.version for row in rows],
            "batch_id": [batch_id] * len(rows),
            "leaf_index": list(range(len(rows))),
            # steps are letters and hex digits: JSON without escaping, written as is
            "proof": [JSONText('["' + '","'.join(p) + '"]' if p else "[]") for p in proofs],
        },
    )
    conn.execute(
        update(license_versions)
        .where(license_versions.c.id.in_([row.id for row in rows]))
        .values(signed=True)
    )
    return batch_id


@dataclass(frozen=True, slots=True)
class StoredSignature:
    """A version's stored signature: its batch (as signed) and its inclusion proof."""

    batch_id: str
    department: str
    batch: BatchSignature
    proof: list[ProofStep]

    @property
    def signed_at(self) -> str:
        return self.batch.signed_at


def _iso(value: dt.datetime) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).isoformat()


def stored_signature(conn: Connection, license_base: str, version: int) -> StoredSignature | None:
    """The proof and batch of one version, or ``None`` when it is unsigned."""
    row = conn.execute(
        select(license_proofs.c.proof, signature_batches)
        .join(signature_batches, signature_batches.c.batch_id == license_proofs.c.batch_id)
        .where(license_proofs.c.license_base == license_base, license_proofs.c.version == version)
    ).one_or_none()
    if row is None:
        return None
    batch = BatchSignature(
        issuer=row.department,
        key_id=row.key_id,
        root=row.root,
        signature=row.signature,
        leaves=row.leaf_count,
        signed_at=_iso(row.signed_at),
        algorithm=row.algorithm,
    )
    return StoredSignature(row.batch_id, row.department, batch, decode_proof(row.proof))


def group_by_department(
    rows: Sequence[Row[Any]], resolver: DepartmentResolver
) -> tuple[dict[str, list[Row[Any]]], list[Row[Any]]]:
    """Versions per signing department, and those no configured department signs."""
    groups: dict[str, list[Row[Any]]] = {}
    orphans: list[Row[Any]] = []
    for row in rows:
        department = resolver.department(row.type_code, row.issuer_code)
        if department is None:
            orphans.append(row)
        else:
            groups.setdefault(department, []).append(row)
    return groups, orphans
