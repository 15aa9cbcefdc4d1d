"""Reading the store on SQLite and PostgreSQL: by holder (through the index), by identifier."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.engine import Engine

from exchange.standards import format_license_id, parse_license_id
from license_store import License, LicenseNotFound, LicenseStore
from license_store.database import create_store_engine
from license_store.store import select_holder_licenses


def test_licenses_for_holder_in_type_then_date_order(
    store: LicenseStore, make_record, samples
) -> None:
    holder = samples.resident_id(1)
    records = [
        make_record(
            1, type_code=samples.marriage_type, number="J1", issue_date=dt.date(2020, 1, 1)
        ),
        make_record(1, number="HK2", issue_date=dt.date(2024, 1, 1)),
        make_record(1, number="HK1", issue_date=dt.date(2010, 1, 1)),
        make_record(2),  # someone else
    ]
    store.upsert(records)
    found = store.licenses_for_holder(holder)
    assert [(item.type_code, item.number) for item in found] == [
        (samples.household_type, "HK1"),
        (samples.household_type, "HK2"),
        (samples.marriage_type, "J1"),
    ]
    first: License = found[0]
    assert first.holder_id == holder
    assert (first.holder_kind, first.holder_code_type) == ("natural", "111")
    assert first.face == {"address": "广东省佛山市禅城区祖庙路1号", "relation": "户主"}
    assert first.issue_date == dt.date(2010, 1, 1)
    assert first.updated_at.tzinfo is not None
    assert parse_license_id(first.license_id).version == first.version == 1
    assert holder not in repr(first)


def test_legal_person_licenses(store: LicenseStore, make_record, samples) -> None:
    store.upsert(
        [
            make_record(
                0,
                holder_id=samples.company,
                type_code=samples.business_type,
                type_name="营业执照",
                holder_name="某某有限公司",
            )
        ]
    )
    (found,) = store.licenses_for_holder(samples.company)
    assert (found.holder_kind, found.holder_code_type) == ("legal", "001")


def test_unknown_holder_has_no_licenses(store: LicenseStore, samples) -> None:
    assert store.licenses_for_holder(samples.resident_id(999)) == []
    assert store.count() == 0


def test_status_is_evaluated_at_read_time(db_url: str, make_record) -> None:
    today = dt.date(2025, 6, 30)
    clock = {"today": today}
    with LicenseStore(db_url, today=lambda: clock["today"]) as store:
        store.upgrade()
        records = {
            "ends_today": make_record(1, valid_to=today),
            "ended_yesterday": make_record(2, valid_to=today - dt.timedelta(days=1)),
            "revoked_long_ago": make_record(3, valid_to=dt.date(2020, 1, 1), status="revoked"),
            "permanent": make_record(4, valid_to=None),
        }
        store.upsert(records.values())

        def status(name: str) -> str:
            return store.licenses_for_holder(records[name].holder_id)[0].status

        assert status("ends_today") == "valid"
        assert status("ended_yesterday") == "expired"
        assert status("revoked_long_ago") == "revoked"
        assert status("permanent") == "valid"
        clock["today"] = today + dt.timedelta(days=1)  # nothing written, yet it expires
        assert status("ends_today") == "expired"
        assert (
            store.get(
                store.licenses_for_holder(records["ends_today"].holder_id)[0].license_id
            ).status
            == "expired"
        )


def test_get_by_any_version_identifier(store: LicenseStore, make_record) -> None:
    record = make_record(5)
    store.upsert([record])
    first = store.licenses_for_holder(record.holder_id)[0]
    store.upsert([make_record(5, holder_name="新名字")])
    current = store.get(first.license_id)
    assert current.version == 2
    assert store.get(current.license_id) == current
    assert [v.version for v in store.versions(first.license_id)] == [1, 2]
    future = str(parse_license_id(first.license_id).with_version(3))
    with pytest.raises(LicenseNotFound):
        store.get(future)


@pytest.mark.parametrize(
    "license_id",
    [
        format_license_id("11440000MB2000000Q001", "11440604MB2C00012P", "20240009999", 1),
        "1.2.156.3005.2.not-an-identifier",
        "",
    ],
)
def test_unknown_or_malformed_identifier_is_not_found(store: LicenseStore, license_id: str) -> None:
    with pytest.raises(LicenseNotFound):
        store.get(license_id)
    with pytest.raises(LicenseNotFound):
        store.versions(license_id)


def _plan(engine: Engine, holder_id: str) -> str:
    statement = select_holder_licenses(holder_id)
    sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
            return "\n".join(str(row[-1]) for row in rows)
        return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))


def test_holder_lookup_uses_the_holder_index(db_url: str, make_record) -> None:
    with LicenseStore(db_url) as store:
        store.upgrade()
        store.upsert(make_record(n) for n in range(3_000))  # PostgreSQL re-analyses after this
        holder = make_record(1234).holder_id
        assert len(store.licenses_for_holder(holder)) == 1
    engine = create_store_engine(db_url)
    try:
        plan = _plan(engine, holder)
    finally:
        engine.dispose()
    assert "ix_licenses_holder_id" in plan, plan
    if engine.dialect.name == "sqlite":
        assert "SCAN licenses" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # the index already gives the order
    else:
        assert "Seq Scan" not in plan, plan
