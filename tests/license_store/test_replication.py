"""Replication in the license store: planning packages, their rows, and applying them upstream.

Each test runs on SQLite and on PostgreSQL: the sender is the ``signing_store`` fixture, the
receiver a second store of the same backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from license_store import LicenseStore
from license_store.errors import ConflictError
from license_store.models import license_proofs, license_versions, licenses, signature_batches
from license_store.replication import (
    PACKAGE_SCHEMA,
    SequenceGap,
    apply_package,
    inbox_advance,
    inbox_expects,
    inbox_positions,
    mark_delivered,
    outbox_entries,
    package_rows,
    plan_dataset_packages,
    plan_packages,
    planned_runs,
)

CHILD, PARENT = "440604", "440600"


@pytest.fixture
def parent_store(request: pytest.FixtureRequest, db_url: str, tmp_path: Any) -> Iterator[Any]:
    """An empty migrated store on the same backend as ``db_url``, for the receiving node."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'parent.db'}"
        name = None
    else:
        admin = request.getfixturevalue("_postgres_admin")
        name = f"govx_test_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        with LicenseStore(url) as opened:
            opened.upgrade()
            yield opened
    finally:
        if name is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def table_rows(store: LicenseStore, table: sa.Table, *, drop: tuple[str, ...] = ()) -> list[Any]:
    """Every row of ``table`` without its local ``id`` (and ``drop``), in a stable order."""
    names = [c.name for c in table.columns if c.name not in ("id", *drop)]
    with store._engine.connect() as conn:
        rows = conn.execute(sa.select(*(table.c[name] for name in names))).all()
    return sorted((tuple(_plain(value) for value in row) for row in rows), key=repr)


def _plain(value: Any) -> Any:
    """Datetimes as UTC (SQLite hands them back naive), JSON as parsed values."""
    if hasattr(value, "tzinfo") and hasattr(value, "hour") and value.tzinfo is None:
        import datetime as dt

        return value.replace(tzinfo=dt.UTC)
    return value


def replicate(sender: LicenseStore, receiver: LicenseStore, **kwargs: Any) -> list[Any]:
    """Plan and apply every new package from ``sender`` to ``receiver``; the entries."""
    entries = plan_packages(sender, PARENT, **kwargs)
    excluded = kwargs.get("excluded_types", ())
    for entry in entries:
        result = apply_package(
            receiver, CHILD, entry.seq, package_rows(sender, entry, excluded_types=excluded)
        )
        assert not result.duplicate
        mark_delivered(sender, entry.seq)
    return entries


def assert_same_licenses(sender: LicenseStore, receiver: LicenseStore) -> None:
    for table in (licenses, license_versions, license_proofs):
        assert table_rows(receiver, table) == table_rows(sender, table), table.name
    assert table_rows(receiver, signature_batches) == table_rows(sender, signature_batches)


def test_the_parent_ends_with_the_childs_licenses_versions_and_proofs(
    signing_store: LicenseStore, parent_store: LicenseStore, make_record: Any
) -> None:
    signing_store.upsert([make_record(n) for n in range(30)])
    signing_store.sign_pending()
    entries = replicate(signing_store, parent_store, max_rows=12)
    assert [(e.seq, e.rows) for e in entries] == [(1, 12), (2, 12), (3, 6)]
    assert_same_licenses(signing_store, parent_store)
    assert len(table_rows(parent_store, license_proofs)) == 30
    assert len(table_rows(parent_store, signature_batches)) >= 1

    # changes, a revocation and a new license: the next packages carry exactly those
    signing_store.upsert([make_record(n, holder_name=f"改名{n}") for n in range(3)])
    license_id = signing_store.licenses_for_holder(make_record(5).holder_id)[0].license_id
    signing_store.revoke(license_id, reason="court-order-1", actor="test")
    signing_store.upsert([make_record(99)])
    signing_store.sign_pending()
    entries = replicate(signing_store, parent_store)
    assert [(e.seq, e.rows) for e in entries] == [(4, 5)]
    assert_same_licenses(signing_store, parent_store)
    revoked = parent_store.licenses_for_holder(make_record(5).holder_id)[0]
    assert revoked.status == "revoked" and revoked.version == 2
    assert parent_store.get(revoked.license_id).status == "revoked"
    assert outbox_entries(signing_store, pending_only=True) == []


def test_replays_and_reordering_change_nothing(
    signing_store: LicenseStore, parent_store: LicenseStore, make_record: Any
) -> None:
    signing_store.upsert([make_record(n) for n in range(10)])
    signing_store.upsert([make_record(n, holder_name=f"新{n}") for n in range(4)])
    signing_store.sign_pending()
    entries = plan_packages(signing_store, PARENT, max_rows=5)
    packages = [package_rows(signing_store, entry) for entry in entries]
    assert len(packages) == 3

    with pytest.raises(SequenceGap) as gap:
        apply_package(parent_store, CHILD, 2, packages[1])
    assert gap.value.expected == 1 and "expected is 1" in str(gap.value)
    assert table_rows(parent_store, licenses) == []

    for seq, table in enumerate(packages, start=1):
        assert not apply_package(parent_store, CHILD, seq, table).duplicate
        again = apply_package(parent_store, CHILD, seq, table)
        assert again.duplicate and again.rows == 0
    assert apply_package(parent_store, CHILD, 1, packages[0]).duplicate
    assert_same_licenses(signing_store, parent_store)

    # the same versions applied in another order (another sender's numbering) end the same
    other = "440605"
    for seq, table in enumerate(reversed(packages), start=1):
        apply_package(parent_store, other, seq, table)
    assert_same_licenses(signing_store, parent_store)


def test_an_older_version_never_replaces_a_newer_one(
    signing_store: LicenseStore, parent_store: LicenseStore, make_record: Any
) -> None:
    signing_store.upsert([make_record(1)])
    first = plan_packages(signing_store, PARENT)[0]
    old = package_rows(signing_store, first)
    signing_store.upsert([make_record(1, holder_name="第二版")])
    second = plan_packages(signing_store, PARENT)[0]
    new = package_rows(signing_store, second)
    apply_package(parent_store, CHILD, 1, new)
    apply_package(parent_store, "440605", 1, old)  # the old version arrives last
    (current,) = parent_store.licenses_for_holder(make_record(1).holder_id)
    assert current.holder_name == "第二版" and current.version == 2
    assert [v.version for v in parent_store.versions(current.license_id)] == [1, 2]


def test_unshared_types_never_leave_and_nothing_new_plans_nothing(
    signing_store: LicenseStore, parent_store: LicenseStore, make_record: Any, samples: Any
) -> None:
    signing_store.upsert(
        [make_record(n) for n in range(3)]
        + [make_record(n, type_code=samples.marriage_type, number=f"JH{n}") for n in range(3)]
    )
    entries = replicate(signing_store, parent_store, excluded_types={samples.household_type})
    assert [e.rows for e in entries] == [3]
    types = {row[2] for row in table_rows(parent_store, licenses)}
    assert types == {samples.marriage_type}
    assert plan_packages(signing_store, PARENT) == []
    # only unshared changes since: still nothing to send
    signing_store.upsert([make_record(0, holder_name="改")])
    assert plan_packages(signing_store, PARENT, excluded_types={samples.household_type}) == []


def test_a_lost_package_is_made_again_the_same(
    signing_store: LicenseStore, make_record: Any
) -> None:
    signing_store.upsert([make_record(n) for n in range(5)])
    signing_store.sign_pending()
    (entry,) = plan_packages(signing_store, PARENT)
    first = package_rows(signing_store, entry)
    signing_store.upsert([make_record(n, holder_name="后来") for n in range(5)])
    assert package_rows(signing_store, entry).equals(first)
    assert first.schema == PACKAGE_SCHEMA and first.num_rows == 5


def test_a_conflicting_package_is_refused_whole(
    signing_store: LicenseStore, parent_store: LicenseStore, make_record: Any
) -> None:
    # the parent made a license of the same issuer itself: same identifier, other content
    parent_store.upsert([make_record(3)])
    signing_store.upsert([make_record(n) for n in range(5)])
    (entry,) = plan_packages(signing_store, PARENT)
    before = table_rows(parent_store, licenses)
    with pytest.raises(ConflictError, match="differs from the one here"):
        apply_package(parent_store, CHILD, 1, package_rows(signing_store, entry))
    assert table_rows(parent_store, licenses) == before
    # the package was not recorded as applied: once fixed, the same number is taken
    with pytest.raises(SequenceGap):
        apply_package(parent_store, CHILD, 2, package_rows(signing_store, entry))


def test_unreadable_content_is_refused(
    signing_store: LicenseStore, parent_store: LicenseStore, make_record: Any
) -> None:
    signing_store.upsert([make_record(1)])
    (entry,) = plan_packages(signing_store, PARENT)
    table = package_rows(signing_store, entry)
    broken = table.set_column(
        table.schema.get_field_index("content"), "content", pa.array(["{not json"])
    )
    with pytest.raises(Exception, match="row 0's content does not match its content hash"):
        apply_package(parent_store, CHILD, 1, broken)
    assert table_rows(parent_store, licenses) == []


def test_dataset_plans_share_the_series_and_keep_the_license_watermark(
    signing_store: LicenseStore, parent_store: LicenseStore, make_record: Any
) -> None:
    signing_store.upsert([make_record(n) for n in range(4)])
    (first,) = plan_packages(signing_store, PARENT)
    runs = [("20261129T010000000000Z-0000000a", 7), ("20261129T020000000000Z-0000000b", 0)]
    planned = plan_dataset_packages(signing_store, PARENT, runs)
    assert [(e.seq, e.kind, e.run_id, e.rows) for e in planned] == [
        (2, "dataset", runs[0][0], 7),
        (3, "dataset", runs[1][0], 0),
    ]
    assert planned[0].after_id == planned[0].through_id == first.through_id
    assert plan_dataset_packages(signing_store, PARENT, runs) == []  # a run goes once
    assert planned_runs(signing_store) == {runs[0][0], runs[1][0]}
    # the next licenses package starts where the first ended: no version skipped or repeated
    signing_store.upsert([make_record(n) for n in range(4, 6)])
    (after,) = plan_packages(signing_store, PARENT)
    assert (after.seq, after.after_id, after.rows) == (4, first.through_id, 2)
    assert [e.kind for e in outbox_entries(signing_store)] == [
        "licenses",
        "dataset",
        "dataset",
        "licenses",
    ]
    # the receiver's series counts every kind: a licenses package after two runs' is number 4
    apply_package(parent_store, CHILD, 1, package_rows(signing_store, first))
    with pytest.raises(SequenceGap) as gap:
        apply_package(parent_store, CHILD, 4, package_rows(signing_store, after))
    assert gap.value.expected == 2
    assert inbox_expects(parent_store, CHILD, 2) and not inbox_expects(parent_store, CHILD, 1)
    assert inbox_advance(parent_store, CHILD, 2, 7) and not inbox_advance(parent_store, CHILD, 2, 7)
    assert inbox_advance(parent_store, CHILD, 3, 0)
    assert not apply_package(parent_store, CHILD, 4, package_rows(signing_store, after)).duplicate
    assert [(p.last_seq, p.rows) for p in inbox_positions(parent_store)] == [(4, 4 + 7 + 2)]
