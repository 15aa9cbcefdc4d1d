"""The row-level quality gate and the derivation of licenses from a source's rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from stdnum.cn import ric

from exchange.config import load_deployment
from exchange.derive import LicenseDeriver
from exchange.standards import mask_id
from quality.gate import REASONS_COLUMN, MissingColumns, RowGate

CONFIG = Path(__file__).resolve().parents[2] / "config"


def rid(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")


GOOD = rid("44060420050101123")
OLDER = rid("44010319900512002")


def person_id_number(person_id: int) -> str:
    """A distinct valid resident ID per person, born 1990-05-12 (the ``OLDER`` region)."""
    return rid(f"44010319900512{person_id:03d}")


def person(person_id: int, id_number: str, **overrides: object) -> dict:
    """A household row; its birth date is the one inside ``id_number`` unless overridden."""
    row = {
        "person_id": person_id,
        "id_number": id_number,
        "name": "陈小明",
        "gender": "男",
        "ethnicity": "汉",
        "birth_date": dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14])),
        "address": "广东省佛山市禅城区祖庙街道升平路1号",
        "card_issue_date": "2021-03-01",
        "card_valid_from": "2021-03-01",
        "card_valid_to": "2031-03-01",
        "card_authority": "佛山市公安局禅城分局",
        "household_no": "440604000123",
        "relation": "子女",
        "register_no": f"440604{person_id:09d}",
        "registered_on": "2005-01-20",
        "household_status": "正常",
        "updated_at": dt.datetime(2026, 11, 1, 8, 0),
    }
    row.update(overrides)
    return row


@pytest.fixture(scope="module")
def deployment():
    return load_deployment(CONFIG)


def test_gate_splits_rows_and_masks_reasons(deployment) -> None:
    source = deployment.source("gd_household_registry")
    rows = [
        person(1, GOOD),
        person(2, GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1")),  # bad check character
        person(3, person_id_number(3), name=" "),  # blank name
        person(4, person_id_number(4), card_valid_to="2020-01-01"),  # expires before issue
        person(5, person_id_number(5), registered_on="yesterday"),  # not a date
        person(6, person_id_number(6)),
    ]
    result = RowGate(source, deployment).split(pa.Table.from_pylist(rows))
    assert result.passed.column("person_id").to_pylist() == [1, 6]
    held = {r["person_id"]: r[REASONS_COLUMN] for r in result.quarantined.to_pylist()}
    assert set(held) == {2, 3, 4, 5}
    assert held[2] == [f"id_number: bad check character ({mask_id(rows[1]['id_number'])})"]
    assert held[3] == ["name: missing"]
    assert held[4] == ["card_valid_to: ends 2020-01-01 before issue date 2021-03-01"]
    assert held[5] == ["registered_on: not a date: 'yesterday'"]
    assert result.passed.num_rows + result.quarantined.num_rows == len(rows)
    assert all(GOOD not in " ".join(r) for r in held.values())


def test_gate_checks_holder_kind(deployment) -> None:
    source = deployment.source("gd_business_registry")
    row = {
        "ent_id": 1,
        "credit_code": GOOD,
        "name": "佛山市禅城区测试贸易有限公司",
        "legal_rep": "陈小明",
        "registered_capital": "100万元人民币",
        "address": "佛山",
        "established_on": "2020-01-01",
        "business_scope": "贸易",
        "reg_status": "存续",
        "license_issue_date": "2020-01-02",
    }
    result = RowGate(source, deployment).split(pa.Table.from_pylist([row]))
    assert result.passed.num_rows == 0
    [reasons] = result.quarantined.column(REASONS_COLUMN).to_pylist()
    assert reasons[0].startswith("credit_code: ")


def test_gate_refuses_a_batch_without_mapped_columns(deployment) -> None:
    source = deployment.source("gd_household_registry")
    table = pa.Table.from_pylist([person(1, GOOD)]).drop_columns(["register_no", "card_authority"])
    with pytest.raises(MissingColumns, match="card_authority, register_no"):
        RowGate(source, deployment).split(table)


def test_derive_builds_one_license_per_mapping(deployment) -> None:
    source = deployment.source("gd_household_registry")
    table = pa.Table.from_pylist([person(7, GOOD, household_status="迁出")])
    records = list(LicenseDeriver(source, deployment, "run-1").records(table))
    assert [r.type_name for r in records] == ["居民身份证", "居民户口簿"]
    card, register = records
    assert card.holder_id == GOOD and card.holder_kind == "natural"
    assert card.number == GOOD
    assert card.issuer_code == "11440000MB2000000Q" and card.region_code == "440000"
    assert (card.issue_date, card.valid_from, card.valid_to) == (
        dt.date(2021, 3, 1),
        dt.date(2021, 3, 1),
        dt.date(2031, 3, 1),
    )
    assert card.face["authority"] == "佛山市公安局禅城分局"
    assert card.status == "valid"
    assert register.status == "revoked"  # 迁出 maps to revoked
    assert register.valid_to is None  # permanent
    assert register.number == "440604000000007"
    assert card.run_id == "run-1" and card.source_id == "gd_household_registry"


def test_derive_both_spouses_get_the_marriage_certificate(deployment) -> None:
    source = deployment.source("foshan_marriage_registry")
    row = {
        "marriage_id": 1,
        "cert_no": "J440604-2019-001234",
        "husband_id": OLDER,
        "husband_name": "陈大文",
        "wife_id": rid("44080219900101002"),
        "wife_name": "李美玲",
        "register_date": "2019-05-20",
        "register_office": "佛山市禅城区民政局婚姻登记处",
        "marital_status": "已婚",
    }
    records = list(LicenseDeriver(source, deployment, "r").records(pa.Table.from_pylist([row])))
    assert {r.holder_name for r in records} == {"陈大文", "李美玲"}
    assert {r.number for r in records} == {"J440604-2019-001234"}


def birth_row(**overrides: object) -> dict:
    row = {
        "record_id": 1,
        "cert_no": "Q440123456",
        "baby_name": "李梓涵",
        "baby_gender": "女",
        "birth_date": "2024-12-18",
        "birth_place": "佛山市妇幼保健院",
        "mother_id": rid("44080219900101002"),
        "mother_name": "陈嘉欣",
        "father_id": OLDER,
        "father_name": "李伟明",
        "issue_date": "2024-12-20",
    }
    row.update(overrides)
    return row


def test_an_optional_mapping_without_a_holder_is_skipped_not_held(deployment) -> None:
    source = deployment.source("chancheng_birth_certificates")
    rows = [
        birth_row(),
        birth_row(record_id=2, cert_no="Q440123457", father_id=None, father_name=None),
    ]
    result = RowGate(source, deployment).split(pa.Table.from_pylist(rows))
    assert result.passed.num_rows == 2 and result.quarantined.num_rows == 0
    records = list(LicenseDeriver(source, deployment, "r").records(result.passed))
    assert [r.holder_name for r in records] == ["陈嘉欣", "李伟明", "陈嘉欣"]
    # an optional mapping still checks what is there: a bad father ID holds the row
    bad = RowGate(source, deployment).split(
        pa.Table.from_pylist([birth_row(father_id=OLDER[:-1] + "0")])
    )
    assert bad.quarantined.num_rows == 1


def test_unknown_status_values_are_held_not_guessed(deployment) -> None:
    source = deployment.source("gd_household_registry")
    rows = [person(1, GOOD, household_status="待核实"), person(2, OLDER, household_status=None)]
    result = RowGate(source, deployment).split(pa.Table.from_pylist(rows))
    reasons = result.quarantined.column(REASONS_COLUMN).to_pylist()
    assert reasons[0] == ["household_status: unknown status '待核实' (mapped: 正常, 迁出, 注销)"]
    assert reasons[1] == ["household_status: unknown status '' (mapped: 正常, 迁出, 注销)"]


def test_deregistered_resident_has_a_revoked_card(deployment) -> None:
    source = deployment.source("gd_household_registry")
    table = pa.Table.from_pylist([person(1, GOOD, household_status="注销")])
    assert {r.status for r in LicenseDeriver(source, deployment, "r").records(table)} == {"revoked"}


def test_overlong_license_numbers_are_held(deployment) -> None:
    source = deployment.source("foshan_marriage_registry")
    row = {
        "marriage_id": 1,
        "cert_no": "J" * 129,
        "husband_id": OLDER,
        "husband_name": "陈大文",
        "wife_id": rid("44080219900101002"),
        "wife_name": "李美玲",
        "register_date": "2019-05-20",
        "register_office": "佛山市禅城区民政局婚姻登记处",
        "marital_status": "已婚",
    }
    [reasons] = (
        RowGate(source, deployment)
        .split(pa.Table.from_pylist([row]))
        .quarantined.column(REASONS_COLUMN)
        .to_pylist()
    )
    assert reasons == ["cert_no: longer than 128 characters"]


def test_a_timestamptz_gives_the_date_in_china() -> None:
    from exchange.standards import to_date

    late_evening_utc = dt.datetime(2024, 3, 1, 17, 30, tzinfo=dt.UTC)  # 01:30 on 2 March in China
    assert to_date(late_evening_utc) == dt.date(2024, 3, 2)
    assert to_date(dt.datetime(2024, 3, 1, 17, 30)) == dt.date(2024, 3, 1)  # naive: as written
