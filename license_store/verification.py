"""Verifying a stored license: its effective status and whether its department's signature holds.

:func:`verify_license` answers "is this certificate genuine and does it stand?" for the API
(``GET /v1/licenses/{id}/verification``) and the CLI. It checks the current version against its
stored Merkle proof and batch signature with the department's public key, and returns a
:class:`Verification` whose ``bundle`` anyone can re-check offline with
:func:`license_store.signing.verify_bundle` and the department's exported public key.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature

from license_store.signing import (
    KeyFileError,
    KeyRing,
    canonical_content,
    key_id,
    verify_inclusion,
)

if TYPE_CHECKING:
    from license_store.signatures import StoredSignature
    from license_store.store import LicenseStore, SignedVersion

__all__ = ["SignatureCheck", "Verification", "verify_license"]

UNSIGNED = "unsigned"
CONTENT_CHANGED = "content changed since signing"
BAD_SIGNATURE = "bad signature"


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """Whether the department's signature covers the license as stored, and if not why."""

    valid: bool
    reason: str | None = None
    department: str | None = None
    key_id: str | None = None
    batch_id: str | None = None
    signed_at: str | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    """A license's verification: current id, effective status, version, signature, proof bundle.

    ``bundle`` (``content``, ``proof``, ``batch``) is what
    :func:`license_store.signing.verify_bundle` checks offline; ``None`` when unsigned. Its
    content holds the holder's ID: hand it only to callers allowed to read the license.
    """

    license_id: str
    status: str
    version: int
    signature: SignatureCheck
    bundle: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: strings, numbers, booleans, lists and dicts only."""
        return {
            "license_id": self.license_id,
            "status": self.status,
            "version": self.version,
            "signature": asdict(self.signature),
            "bundle": self.bundle,
        }


def verify_license(store: LicenseStore, license_id: str, keyring: KeyRing) -> Verification:
    """Verify the current version of the license ``license_id`` (any of its versions) names.

    Raises :class:`license_store.errors.LicenseNotFound` for an unknown or malformed identifier.
    ``keyring`` supplies the departments' public keys (only the public keys are read).
    """
    signed = store.signed_version(license_id)
    license = signed.license
    stored = signed.signature
    check = _check(signed, keyring)
    bundle = None
    if stored is not None:
        bundle = {
            "content": signed.stored_content,
            "proof": [asdict(step) for step in stored.proof],
            "batch": asdict(stored.batch),
        }
    return Verification(license.license_id, license.status, license.version, check, bundle)


def _check(signed: SignedVersion, keyring: KeyRing) -> SignatureCheck:
    stored = signed.signature
    if stored is None:
        return SignatureCheck(False, UNSIGNED)

    def failed(reason: str) -> SignatureCheck:
        return _result(stored, False, reason)

    if signed.version_content is None or signed.stored_content != signed.version_content:
        return failed(CONTENT_CHANGED)
    try:
        public_key = keyring.public_key(stored.department)
    except KeyFileError:
        return failed(f"no public key for department {stored.department}")
    if key_id(public_key) != stored.batch.key_id:
        return failed(
            f"signed with key {stored.batch.key_id}, department {stored.department}'s key is "
            f"{key_id(public_key)} (rotated? verify with the old public key)"
        )
    content = canonical_content(signed.stored_content)
    if verify_inclusion(public_key, content, stored.proof, stored.batch):
        return _result(stored, True, None)
    try:  # tell a forged signature from content or a proof that does not reach the signed root
        public_key.verify(base64.b64decode(stored.batch.signature), stored.batch.message())
    except (InvalidSignature, ValueError):
        return failed(BAD_SIGNATURE)
    return failed(CONTENT_CHANGED)


def _result(stored: StoredSignature, valid: bool, reason: str | None) -> SignatureCheck:
    return SignatureCheck(
        valid=valid,
        reason=reason,
        department=stored.department,
        key_id=stored.batch.key_id,
        batch_id=stored.batch_id,
        signed_at=stored.signed_at,
    )
