"""What goes into the license store and what comes out: records, licenses, versions.

:class:`LicenseRecord` is the input contract the exchange hands to
:meth:`license_store.LicenseStore.upsert`; :class:`License` and :class:`LicenseVersion` are what
readers get back. :func:`content_hash` decides whether a record changes a stored license.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exchange.standards.holder_ids import HolderKind

__all__ = [
    "LICENSE_STATUSES",
    "MAX_NUMBER_LENGTH",
    "License",
    "LicenseRecord",
    "LicenseVersion",
    "canonical_json",
    "content_hash",
    "content_of",
    "effective_status",
    "hash_text",
]

LICENSE_STATUSES = ("valid", "expired", "revoked", "suspended")
MAX_NUMBER_LENGTH = 128  # characters of a license number the store keeps
HOLDER_KINDS = tuple(kind.value for kind in HolderKind)
# Fields that describe where a record came from, not what the license says.
PROVENANCE_FIELDS = ("source_id", "run_id")


@dataclass(frozen=True, slots=True)
class LicenseRecord:
    """One license as a department's data says it is, ready to be stored.

    ``holder_id`` must already be validated and normalised (see
    :func:`exchange.standards.parse_holder_id`); ``repr`` masks it.
    """

    type_code: str
    type_name: str
    issuer_code: str
    issuer_name: str
    region_code: str
    holder_id: str = field(repr=False)
    holder_kind: str
    holder_name: str
    number: str
    issue_date: dt.date
    valid_from: dt.date | None
    valid_to: dt.date | None
    status: str
    face: Mapping[str, str]
    source_id: str
    run_id: str

    def __post_init__(self) -> None:
        if self.holder_kind not in HOLDER_KINDS:
            raise ValueError(f"holder_kind must be one of {HOLDER_KINDS}, got {self.holder_kind!r}")
        if self.status not in LICENSE_STATUSES:
            raise ValueError(f"status must be one of {LICENSE_STATUSES}, got {self.status!r}")

    @property
    def natural_key(self) -> tuple[str, str, str]:
        """``(type_code, holder_id, number)``: one license per key."""
        return (self.type_code, self.holder_id, self.number)


def _date_text(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def content_of(record: LicenseRecord) -> dict[str, Any]:
    """Every content field of the record as JSON-ready values (provenance fields left out)."""
    return {
        "type_code": record.type_code,
        "type_name": record.type_name,
        "issuer_code": record.issuer_code,
        "issuer_name": record.issuer_name,
        "region_code": record.region_code,
        "holder_id": record.holder_id,
        "holder_kind": record.holder_kind,
        "holder_name": record.holder_name,
        "number": record.number,
        "issue_date": _date_text(record.issue_date),
        "valid_from": _date_text(record.valid_from),
        "valid_to": _date_text(record.valid_to),
        "status": record.status,
        "face": dict(record.face),
    }


def canonical_json(content: Mapping[str, Any]) -> str:
    """The canonical JSON text of a :func:`content_of` mapping: sorted keys, compact, UTF-8."""
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def hash_text(canonical: str) -> str:
    """SHA-256 (hex) of canonical JSON text."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def content_hash(record: LicenseRecord) -> str:
    """SHA-256 (hex) over canonical JSON of every content field; equal content, equal hash."""
    return hash_text(canonical_json(content_of(record)))


def effective_status(stored: str, valid_to: dt.date | None, today: dt.date) -> str:
    """The status a reader sees today: a ``valid`` license past its ``valid_to`` is ``expired``."""
    if stored == "valid" and valid_to is not None and valid_to < today:
        return "expired"
    return stored


@dataclass(frozen=True, slots=True)
class License:
    """A stored license as readers get it: current version, status evaluated at read time."""

    license_id: str
    type_code: str
    type_name: str
    number: str
    issuer_code: str
    issuer_name: str
    region_code: str
    holder_id: str = field(repr=False)
    holder_kind: str
    holder_code_type: str
    holder_name: str
    issue_date: dt.date
    valid_from: dt.date | None
    valid_to: dt.date | None
    status: str
    version: int
    face: dict[str, str]
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class LicenseVersion:
    """One stored version of a license, for traceability (全程留痕)."""

    license_id: str
    version: int
    content_hash: str
    content: dict[str, Any] = field(repr=False)
    source_id: str
    run_id: str
    recorded_at: dt.datetime
