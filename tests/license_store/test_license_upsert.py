"""Bulk upsert on SQLite and PostgreSQL: versions, identifiers, sequences and atomicity."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest
from sqlalchemy import select

from exchange.standards import parse_license_id
from license_store import ConflictError, LicenseStore, UpsertResult
from license_store.database import create_store_engine
from license_store.models import license_sequences, license_versions


def test_insert_then_unchanged(store: LicenseStore, make_record) -> None:
    records = [make_record(n) for n in range(5)]
    assert store.upsert(records) == UpsertResult(inserted=5, updated=0, unchanged=0)
    assert store.upsert(records) == UpsertResult(inserted=0, updated=0, unchanged=5)
    assert store.count() == 5
    found = store.licenses_for_holder(records[0].holder_id)
    assert [item.version for item in found] == [1]
    assert len(store.versions(found[0].license_id)) == 1


def test_new_provenance_alone_writes_nothing(store: LicenseStore, make_record) -> None:
    record = make_record(1)
    store.upsert([record])
    before = store.licenses_for_holder(record.holder_id)[0]
    rerun = dataclasses.replace(record, source_id="fs_household_v2", run_id="run-2")
    assert store.upsert([rerun]) == UpsertResult(unchanged=1)
    after = store.licenses_for_holder(record.holder_id)[0]
    assert after == before  # same version, identifier and updated_at
    assert [v.run_id for v in store.versions(after.license_id)] == ["run-1"]


def test_changed_content_makes_a_new_version(store: LicenseStore, make_record) -> None:
    record = make_record(1)
    store.upsert([record])
    first = store.licenses_for_holder(record.holder_id)[0]
    new_face = {"address": "广东省佛山市南海区桂城街道1号", "relation": "户主"}
    moved = dataclasses.replace(record, face=new_face, run_id="run-2")
    assert store.upsert([moved]) == UpsertResult(updated=1)
    second = store.licenses_for_holder(record.holder_id)[0]

    old_id, new_id = parse_license_id(first.license_id), parse_license_id(second.license_id)
    assert (old_id.version, new_id.version) == (1, 2)
    assert first.license_id.split(".")[-2] == "001"
    assert second.license_id.split(".")[-2] == "002"
    assert old_id.base == new_id.base
    assert first.license_id.rsplit(".", 1)[1] == old_id.check
    assert second.license_id.rsplit(".", 1)[1] == new_id.check
    assert second.version == 2
    assert second.face["address"] == "广东省佛山市南海区桂城街道1号"
    assert second.updated_at >= first.updated_at

    history = store.versions(first.license_id)
    assert [(v.version, v.license_id) for v in history] == [
        (1, first.license_id),
        (2, second.license_id),
    ]
    assert history[0].content["face"]["address"] == record.face["address"]
    assert history[1].run_id == "run-2"
    assert store.get(first.license_id) == second  # an old identifier gives the current version
    assert store.upsert([moved]) == UpsertResult(unchanged=1)
    assert store.count() == 1


def test_check_character_follows_the_version(store: LicenseStore, make_record) -> None:
    record = make_record(7)
    store.upsert([record])
    identifiers = [store.licenses_for_holder(record.holder_id)[0].license_id]
    for version in range(2, 6):
        store.upsert([dataclasses.replace(record, holder_name=f"测试{version}")])
        identifiers.append(store.licenses_for_holder(record.holder_id)[0].license_id)
    parsed = [parse_license_id(text) for text in identifiers]  # every check character is valid
    assert [p.version for p in parsed] == [1, 2, 3, 4, 5]
    assert len({p.base for p in parsed}) == 1
    assert len({p.check for p in parsed}) > 1


def test_mixed_call_counts_each_outcome(store: LicenseStore, make_record) -> None:
    store.upsert([make_record(n) for n in range(4)])
    mixed = [
        make_record(0),  # unchanged
        make_record(1, holder_name="改名"),  # updated
        make_record(2, status="revoked"),  # updated
        make_record(10),  # new
    ]
    assert store.upsert(mixed) == UpsertResult(inserted=1, updated=2, unchanged=1)
    assert store.count() == 5


def test_duplicate_keys_in_one_call_last_one_wins(db_url: str, make_record) -> None:
    with LicenseStore(db_url, batch_size=2) as store:
        store.upsert([])  # nothing to do, no schema needed
        store.upgrade()
        first, last = make_record(1, holder_name="甲"), make_record(1, holder_name="乙")
        records = [first, make_record(2), make_record(3), last]  # in different batches
        assert store.upsert(records) == UpsertResult(inserted=3)
        found = store.licenses_for_holder(first.holder_id)
        assert [(item.holder_name, item.version) for item in found] == [("乙", 1)]
        assert store.upsert([last, first]) == UpsertResult(updated=1)
        assert store.licenses_for_holder(first.holder_id)[0].holder_name == "甲"


def test_same_number_for_two_holders(store: LicenseStore, make_record, samples) -> None:
    """A marriage certificate has one number for both spouses: two licenses."""
    couple = [
        make_record(
            n,
            type_code=samples.marriage_type,
            type_name="结婚证",
            issuer_code=samples.civil_affairs,
            issuer_name="佛山市禅城区民政局",
            number="J440604-2024-000123",
        )
        for n in (21, 22)
    ]
    assert store.upsert(couple) == UpsertResult(inserted=2)
    ids = {store.licenses_for_holder(r.holder_id)[0].license_id for r in couple}
    assert len(ids) == 2


def _sequences(store: LicenseStore, holder_ids: list[str]) -> list[str]:
    return [
        parse_license_id(item.license_id).sequence
        for holder in holder_ids
        for item in store.licenses_for_holder(holder)
    ]


def test_sequences_are_unique_per_type_issuer_and_year(
    store: LicenseStore, make_record, samples
) -> None:
    in_2023 = [make_record(n, issue_date=dt.date(2023, 5, 1)) for n in range(3)]
    in_2024 = [make_record(n) for n in range(3, 5)]
    other_issuer = [make_record(n, issuer_code=samples.civil_affairs) for n in range(5, 7)]
    store.upsert(in_2023 + in_2024 + other_issuer)
    assert sorted(_sequences(store, [r.holder_id for r in in_2023])) == [
        "20230000001",
        "20230000002",
        "20230000003",
    ]
    assert sorted(_sequences(store, [r.holder_id for r in in_2024])) == [
        "20240000001",
        "20240000002",
    ]
    assert sorted(_sequences(store, [r.holder_id for r in other_issuer])) == [
        "20240000001",
        "20240000002",
    ]
    later = [make_record(n) for n in range(7, 9)]  # the counter carries on in the next call
    store.upsert(later)
    assert sorted(_sequences(store, [r.holder_id for r in later])) == [
        "20240000003",
        "20240000004",
    ]


@pytest.mark.parametrize("broken", ["new", "changed"])
def test_a_failing_record_leaves_nothing_written(db_url: str, make_record, broken: str) -> None:
    with LicenseStore(db_url, batch_size=3) as store:
        store.upgrade()
        existing = [make_record(n) for n in range(3)]
        store.upsert(existing)
        changes = [dataclasses.replace(r, holder_name=r.holder_name + "改") for r in existing]
        new = [make_record(n) for n in range(100, 108)]
        bad_index = 1 if broken == "changed" else 6  # written after earlier batches succeeded
        target = changes if broken == "changed" else new
        bad = target[bad_index]
        target[bad_index] = dataclasses.replace(bad, holder_name=None)  # violates NOT NULL

        with pytest.raises(ConflictError) as caught:
            store.upsert(changes + new)

        assert bad.holder_id not in str(caught.value)  # masked, never raw
        assert caught.value.__cause__ is None
        assert store.count() == 3
        for record in existing:
            (found,) = store.licenses_for_holder(record.holder_id)
            assert (found.version, found.holder_name) == (1, record.holder_name)
        assert store.licenses_for_holder(new[0].holder_id) == []
        engine = create_store_engine(db_url)
        try:
            with engine.connect() as conn:
                assert conn.execute(select(license_sequences.c.last_serial)).scalars().all() == [3]
                assert len(conn.execute(select(license_versions.c.id)).all()) == 3
        finally:
            engine.dispose()
        # the counters were rolled back with the rest: no gap in the sequence
        assert store.upsert([new[0]]) == UpsertResult(inserted=1)
        assert _sequences(store, [new[0].holder_id]) == ["20240000004"]


def test_concurrent_writers_never_share_a_sequence(db_url: str, make_record) -> None:
    with LicenseStore(db_url) as store:
        store.upgrade()
    per_writer, writers = 200, 3
    chunks = [[make_record(w * per_writer + n) for n in range(per_writer)] for w in range(writers)]
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(records: list) -> None:
        try:
            with LicenseStore(db_url, batch_size=50) as own:
                start.wait()
                for offset in range(0, len(records), 50):
                    own.upsert(records[offset : offset + 50])
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with LicenseStore(db_url) as store:
        assert store.count() == per_writer * writers
        holders = [r.holder_id for chunk in chunks for r in chunk]
        sequences = _sequences(store, holders)
    assert len(set(sequences)) == per_writer * writers
    assert max(sequences) == f"2024{per_writer * writers:07d}"


def test_upsert_accepts_a_generator(store: LicenseStore, make_record, samples) -> None:
    assert store.upsert(make_record(n) for n in range(3)) == UpsertResult(inserted=3)
    assert store.licenses_for_holder(samples.resident_id(2))[0].holder_name == "测试2"


def test_an_update_rewrites_every_content_field(store: LicenseStore, make_record) -> None:
    record = make_record(3, valid_to=None)
    store.upsert([record])
    changed = dataclasses.replace(
        record,
        type_name="居民户口簿(电子)",
        issuer_name="佛山市公安局",
        region_code="440605",
        holder_name="王五",
        issue_date=dt.date(2024, 4, 2),
        valid_from=dt.date(2024, 4, 2),
        valid_to=dt.date(2099, 4, 1),
        status="suspended",
        face={"address": "广东省佛山市南海区", "relation": "户主", "note": "迁入"},
    )
    assert store.upsert([changed]) == UpsertResult(updated=1)
    (found,) = store.licenses_for_holder(record.holder_id)
    for name in (
        "type_name",
        "issuer_name",
        "region_code",
        "holder_name",
        "issue_date",
        "valid_from",
        "valid_to",
        "status",
    ):
        assert getattr(found, name) == getattr(changed, name), name
    assert found.face == changed.face
