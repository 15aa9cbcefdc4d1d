"""The store's data contract: content hashes, record checks and the status seen at read time."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from license_store.records import LicenseRecord, content_hash, effective_status

CONTENT_CHANGES = {
    "type_name": "居民户口簿(新版)",
    "issuer_code": "11440604MB2C0003XX",
    "issuer_name": "佛山市公安局",
    "region_code": "440605",
    "holder_kind": "legal",
    "holder_name": "李四",
    "number": "HK99999999",
    "issue_date": dt.date(2024, 3, 2),
    "valid_from": None,
    "valid_to": dt.date(2034, 3, 1),
    "status": "revoked",
    "face": {"address": "广东省佛山市南海区", "relation": "户主"},
}


def test_content_hash_is_stable_and_ignores_face_order(make_record) -> None:
    record = make_record(1, face={"a": "1", "b": "2"})
    same = make_record(1, face={"b": "2", "a": "1"})
    assert content_hash(record) == content_hash(same)
    assert len(content_hash(record)) == 64


def test_content_hash_ignores_provenance(make_record) -> None:
    record = make_record(1)
    other_run = dataclasses.replace(record, source_id="another_source", run_id="run-2")
    assert content_hash(record) == content_hash(other_run)


@pytest.mark.parametrize("field", sorted(CONTENT_CHANGES))
def test_content_hash_covers_every_content_field(make_record, field: str) -> None:
    record = make_record(1)
    changed = dataclasses.replace(record, **{field: CONTENT_CHANGES[field]})
    assert content_hash(changed) != content_hash(record)


def test_record_rejects_unknown_status_and_holder_kind(make_record) -> None:
    with pytest.raises(ValueError, match="status"):
        make_record(1, status="cancelled")
    with pytest.raises(ValueError, match="holder_kind"):
        make_record(1, holder_kind="person")


def test_record_repr_hides_the_holder_id(make_record) -> None:
    record: LicenseRecord = make_record(1)
    assert record.holder_id not in repr(record)


@pytest.mark.parametrize(
    ("stored", "valid_to", "expected"),
    [
        ("valid", None, "valid"),
        ("valid", dt.date(2025, 6, 30), "valid"),  # the last valid day
        ("valid", dt.date(2025, 6, 29), "expired"),
        ("revoked", dt.date(2020, 1, 1), "revoked"),
        ("suspended", None, "suspended"),
        ("expired", dt.date(2030, 1, 1), "expired"),
    ],
)
def test_effective_status(stored: str, valid_to: dt.date | None, expected: str) -> None:
    assert effective_status(stored, valid_to, today=dt.date(2025, 6, 30)) == expected
