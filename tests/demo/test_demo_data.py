"""The demo department systems: deterministic, valid where they should be, dirty where they should
be, consistent across systems, and a day of changes an incremental sync can pick up."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import re
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import openpyxl
import pytest
from sqlalchemy import create_engine, func, inspect, select

from exchange.config import load_deployment
from exchange.demo import (
    AS_OF,
    DIRTY_ROWS,
    SAMPLE_APPLICANT_ID,
    DemoSystem,
    connection_env,
    dirty_rows,
    generate_department_systems,
    sample_applicant,
    simulate_changes,
    start_department_api,
)
from exchange.demo.people import card_term_years
from exchange.demo.schema import SYSTEM_SPECS, spec_for
from exchange.standards import InvalidIdentifier, validate_ric, validate_uscc

REPO = Path(__file__).resolve().parents[2]
AS_OF_DATE = AS_OF.date()
Row = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------------


def read_rows(system: DemoSystem) -> list[Row]:
    spec = spec_for(system.conn_id)
    engine = create_engine(system.url)
    try:
        with engine.connect() as connection:
            query = select(spec.table).order_by(spec.table.c[spec.primary_key])
            return [dict(r) for r in connection.execute(query).mappings()]
    finally:
        engine.dispose()


def digest(system: DemoSystem) -> str:
    """Hash of the rows exactly as stored (SQLite text), in primary-key order."""
    path = system.url.removeprefix("sqlite:///")
    spec = spec_for(system.conn_id)
    with sqlite3.connect(path) as connection:
        cursor = connection.execute(f"SELECT * FROM {system.table} ORDER BY {spec.primary_key}")
        return hashlib.sha256(repr(cursor.fetchall()).encode()).hexdigest()


def max_updated_at(system: DemoSystem) -> dt.datetime:
    engine = create_engine(system.url)
    table = spec_for(system.conn_id).table
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.max(table.c.updated_at))).scalar_one()
    finally:
        engine.dispose()


def invalid_reason(validate: Any, value: str) -> str | None:
    try:
        validate(value)
    except InvalidIdentifier as exc:
        return exc.reason
    return None


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@pytest.fixture(scope="module")
def systems(tmp_path_factory: pytest.TempPathFactory) -> list[DemoSystem]:
    return generate_department_systems(tmp_path_factory.mktemp("departments"))


@pytest.fixture(scope="module")
def tables(systems: list[DemoSystem]) -> dict[str, list[Row]]:
    return {s.table: read_rows(s) for s in systems}


@pytest.fixture(scope="module")
def people(tables: dict[str, list[Row]]) -> dict[str, Row]:
    return {r["id_number"]: r for r in tables["persons"]}


# --- determinism and size ------------------------------------------------------------------------


def test_same_seed_gives_identical_rows_and_another_seed_different_ones(tmp_path: Path) -> None:
    first = generate_department_systems(tmp_path / "a", seed=7, persons=1500)
    again = generate_department_systems(tmp_path / "b", seed=7, persons=1500)
    other = generate_department_systems(tmp_path / "c", seed=8, persons=1500)
    assert [digest(s) for s in first] == [digest(s) for s in again]
    assert dirty_rows(first) == dirty_rows(other) == dirty_rows() == dict(DIRTY_ROWS)
    for mine, theirs in zip(first, other, strict=True):
        assert digest(mine) != digest(theirs), mine.source_id


def test_default_sizes(systems: list[DemoSystem], tables: dict[str, list[Row]]) -> None:
    assert [s.conn_id for s in systems] == [spec.conn_id for spec in SYSTEM_SPECS]
    counts = {s.table: s.rows for s in systems}
    assert counts == {table: len(rows) for table, rows in tables.items()}
    assert counts["persons"] == 12_000
    assert counts["enterprises"] == 2_000
    assert counts["property_rights"] == 3_001  # a quarter of the persons, plus the sample's flat
    assert 1_500 < counts["marriages"] < 4_000
    assert 400 < counts["birth_records"] < 1_500
    for system in systems:
        store_id = spec_for(system.conn_id).store_id
        assert Path(system.url.removeprefix("sqlite:///")).name == f"{store_id}.db"


def test_each_system_delivers_the_way_its_source_reads(systems: list[DemoSystem]) -> None:
    deployment = load_deployment(REPO / "config")
    kinds = {s.source_id: s.kind for s in systems}
    assert kinds == {s.id: s.connector.kind for s in deployment.sources}
    assert kinds == {
        "gd_household_registry": "sql",
        "foshan_marriage_registry": "sql",
        "chancheng_birth_certificates": "rest",
        "gd_business_registry": "files",
        "nanhai_real_estate": "files",
    }
    drops = {s.source_id: sorted(s.drop_dir.iterdir()) for s in systems if s.kind == "files"}
    assert {k: [p.name for p in v] for k, v in drops.items()} == {
        "gd_business_registry": ["enterprises_20241231.csv"],
        "nanhai_real_estate": ["property_rights_20241231.xlsx"],
    }
    assert all(s.drop_dir is None for s in systems if s.kind != "files")


def test_persons_below_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 100"):
        generate_department_systems(tmp_path, persons=10)


@pytest.mark.parametrize(("seed", "persons"), [(1, 100), (2, 101), (3, 250), (4, 999)])
def test_dirty_rows_sit_at_fixed_keys_for_any_seed_and_size(
    tmp_path: Path, seed: int, persons: int
) -> None:
    systems = generate_department_systems(tmp_path, seed=seed, persons=persons)
    tables = {s.source_id: read_rows(s) for s in systems}
    bad_people = [
        r["person_id"]
        for r in tables["gd_household_registry"]
        if invalid_reason(validate_ric, r["id_number"])
    ]
    bad_companies = [
        r["ent_id"]
        for r in tables["gd_business_registry"]
        if invalid_reason(validate_uscc, r["credit_code"])
    ]
    assert {
        "gd_household_registry": tuple(bad_people),
        "gd_business_registry": tuple(bad_companies),
    } == {k: v for k, v in DIRTY_ROWS.items() if v}
    assert len(tables["gd_household_registry"]) == persons
    assert sample_applicant(systems) == SAMPLE_APPLICANT_ID


def test_tables_have_every_column_the_configuration_names(systems: list[DemoSystem]) -> None:
    deployment = load_deployment(REPO / "config")
    by_source = {s.source_id: s for s in systems}
    assert set(by_source) == set(deployment.source_by_id)
    for source in deployment.sources:
        system = by_source[source.id]
        assert system.conn_id == source.connection
        if source.connector.kind == "sql":
            assert system.table == source.connector.options["table"]
        engine = create_engine(system.url)
        columns = {c["name"] for c in inspect(engine).get_columns(system.table)}
        engine.dispose()
        wanted = set(source.primary_key) | set(source.connector.options.get("columns", ()))
        if source.cursor is not None:
            wanted.add(source.cursor)
        for mapping in source.licenses:
            wanted |= mapping.columns()
        assert wanted <= columns, (source.id, sorted(wanted - columns))


# --- identifiers ---------------------------------------------------------------------------------


def test_every_resident_id_is_valid_except_the_listed_dirty_rows(
    systems: list[DemoSystem], tables: dict[str, list[Row]]
) -> None:
    persons = tables["persons"]
    reasons = {
        r["person_id"]: reason
        for r in persons
        if (reason := invalid_reason(validate_ric, r["id_number"])) is not None
    }
    listed = dirty_rows(systems)
    assert reasons == {
        7: "bad check character",
        33: "bad check character",
        61: "bad check character",
        97: "bad birth date",
    }
    assert tuple(sorted(reasons)) == listed["gd_household_registry"]
    assert len({r["id_number"] for r in persons}) == len(persons)
    assert len({r["register_no"] for r in persons}) == len(persons)
    for row in persons:
        number = row["id_number"]
        assert int(number[16]) % 2 == (1 if row["gender"] == "男" else 0)
        if row["person_id"] not in reasons:
            assert number[6:14] == row["birth_date"].strftime("%Y%m%d")
            assert dt.date(1940, 1, 1) <= row["birth_date"] <= AS_OF_DATE
    clean = {
        k: v
        for k, v in listed.items()
        if k not in ("gd_household_registry", "gd_business_registry")
    }
    assert all(keys == () for keys in clean.values())


def test_every_credit_code_is_valid_except_the_listed_dirty_row(
    systems: list[DemoSystem], tables: dict[str, list[Row]]
) -> None:
    enterprises = tables["enterprises"]
    reasons = {
        r["ent_id"]: reason
        for r in enterprises
        if (reason := invalid_reason(validate_uscc, r["credit_code"])) is not None
    }
    assert reasons == {13: "bad check character"}
    assert dirty_rows(systems)["gd_business_registry"] == (13,)
    assert len({r["credit_code"] for r in enterprises}) == len(enterprises)
    assert len({r["name"] for r in enterprises}) == len(enterprises)
    assert {r["credit_code"][:2] for r in enterprises} == {"91", "92", "93"}


def test_holder_ids_in_the_other_systems_are_valid(tables: dict[str, list[Row]]) -> None:
    for table, columns in (
        ("marriages", ("husband_id", "wife_id")),
        ("birth_records", ("mother_id", "father_id")),
        ("property_rights", ("owner_id",)),
    ):
        for row in tables[table]:
            for column in columns:
                validate_ric(row[column], column)


# --- consistency across systems ------------------------------------------------------------------


def test_households_and_cards_follow_the_rules(tables: dict[str, list[Row]]) -> None:
    households: dict[str, list[Row]] = defaultdict(list)
    for row in tables["persons"]:
        households[row["household_no"]].append(row)
    assert {len(m) for m in households.values()} == {1, 2, 3, 4, 5}
    for members in households.values():
        assert [m["relation"] for m in members].count("户主") == 1
        assert len({m["address"] for m in members}) == 1
        assert len({m["register_no"][:6] for m in members}) == 1
    expired = 0
    for row in tables["persons"]:
        assert row["card_valid_from"] == row["card_issue_date"]
        assert row["updated_at"] <= AS_OF
        term = card_term_years(age_on(row["birth_date"], row["card_issue_date"]))
        if term is None:
            assert row["card_valid_to"] is None  # long-term (长期)
        else:
            assert (row["card_valid_to"] - row["card_issue_date"]).days // 365 == term
            expired += row["card_valid_to"] < AS_OF_DATE
    assert 10 <= expired <= 300  # a realistic handful of cards that were never renewed
    statuses = Counter(r["household_status"] for r in tables["persons"])
    assert set(statuses) == {"正常", "迁出", "注销"}
    assert statuses["正常"] > 0.95 * len(tables["persons"])


def test_spouses_are_adult_residents_of_opposite_gender(
    tables: dict[str, list[Row]], people: dict[str, Row]
) -> None:
    statuses = Counter(r["marital_status"] for r in tables["marriages"])
    assert set(statuses) == {"已婚", "离婚"}
    assert len({r["cert_no"] for r in tables["marriages"]}) == len(tables["marriages"])
    for row in tables["marriages"]:
        husband, wife = people[row["husband_id"]], people[row["wife_id"]]
        assert (husband["gender"], wife["gender"]) == ("男", "女")
        assert (husband["name"], wife["name"]) == (row["husband_name"], row["wife_name"])
        assert age_on(husband["birth_date"], row["register_date"]) >= 22
        assert age_on(wife["birth_date"], row["register_date"]) >= 20
        assert re.fullmatch(rf"J\d{{6}}-{row['register_date'].year}-\d{{6}}", row["cert_no"])
        assert row["register_office"].endswith("民政局婚姻登记处")
        if row["marital_status"] == "已婚":
            assert husband["household_no"] == wife["household_no"]
        else:
            assert husband["household_no"] != wife["household_no"]


def test_births_belong_to_married_parents_and_babies_live_with_them(
    tables: dict[str, list[Row]], people: dict[str, Row]
) -> None:
    couples = {(r["husband_id"], r["wife_id"]): r for r in tables["marriages"]}
    registered = {(r["name"], r["birth_date"]): r for r in tables["persons"]}
    pending = 0
    for row in tables["birth_records"]:
        mother, father = people[row["mother_id"]], people[row["father_id"]]
        marriage = couples[(row["father_id"], row["mother_id"])]
        assert marriage["register_date"] < row["birth_date"] <= row["issue_date"] <= AS_OF_DATE
        assert (mother["name"], father["name"]) == (row["mother_name"], row["father_name"])
        baby = registered.get((row["baby_name"], row["birth_date"]))
        if baby is None:  # born in the last weeks: not in the household register yet
            assert (AS_OF_DATE - row["birth_date"]).days < 45
            pending += 1
            continue
        assert baby["relation"] == "子女" and baby["gender"] == row["baby_gender"]
        assert baby["household_no"] in (mother["household_no"], father["household_no"])
        assert re.fullmatch(r"[K-T]44\d{7}", row["cert_no"])
    assert pending >= 1
    assert len({r["cert_no"] for r in tables["birth_records"]}) == len(tables["birth_records"])


def test_legal_representatives_and_owners_are_clean_residents(
    systems: list[DemoSystem], tables: dict[str, list[Row]], people: dict[str, Row]
) -> None:
    dirty = set(dirty_rows(systems)["gd_household_registry"])
    clean_names = {r["name"] for r in tables["persons"] if r["person_id"] not in dirty}
    assert {r["legal_rep"] for r in tables["enterprises"]} <= clean_names
    for row in tables["property_rights"]:
        owner = people[row["owner_id"]]
        assert owner["name"] == row["owner_name"] and owner["person_id"] not in dirty
        assert row["location"].startswith("佛山市南海区")
        assert re.fullmatch(r"\d+\.\d\d", row["area_m2"])
        assert re.fullmatch(
            rf"粤\({row['register_date'].year}\)佛山市不动产权第\d{{7}}号", row["cert_no"]
        )
    assert len({r["cert_no"] for r in tables["property_rights"]}) == len(tables["property_rights"])
    assert {r["right_status"] for r in tables["property_rights"]} == {"正常", "注销", "查封"}
    assert {r["reg_status"] for r in tables["enterprises"]} == {"存续", "注销", "吊销"}


# --- the sample applicant ------------------------------------------------------------------------


def test_sample_applicant_holds_every_material_of_newborn_registration(
    systems: list[DemoSystem], tables: dict[str, list[Row]]
) -> None:
    applicant = sample_applicant(systems)
    assert applicant == SAMPLE_APPLICANT_ID
    deployment = load_deployment(REPO / "config")
    matter = next(m for m in deployment.matters if m.name == "新生儿入户登记")
    wanted = {m.license_type for m in matter.materials if m.license_type}
    wanted.add("real_estate_certificate")  # the family owns a flat, too
    held = set()
    by_source = {s.source_id: s for s in systems}
    for source in deployment.sources:
        rows = tables[by_source[source.id].table]
        for mapping in source.licenses:
            for row in rows:
                if row[mapping.holder_id] != applicant:
                    continue
                status = row[mapping.status] if mapping.status else None
                if mapping.status_values.get(status, "valid") != "valid":
                    continue
                if mapping.valid_to and row[mapping.valid_to] is not None:
                    assert row[mapping.valid_to] > AS_OF_DATE
                held.add(mapping.type)
    assert wanted <= held, sorted(wanted - held)
    dirty = set(dirty_rows(systems)["gd_household_registry"])
    household = next(r["household_no"] for r in tables["persons"] if r["id_number"] == applicant)
    assert not {r["person_id"] for r in tables["persons"] if r["household_no"] == household} & dirty


def test_sample_applicant_needs_the_three_systems(systems: list[DemoSystem]) -> None:
    with pytest.raises(LookupError, match="foshan_marriage_registry"):
        sample_applicant([s for s in systems if s.source_id == "gd_household_registry"])


# --- the next day --------------------------------------------------------------------------------


def test_simulate_changes_touches_reported_rows_after_every_cursor(tmp_path: Path) -> None:
    systems = generate_department_systems(tmp_path / "day1", persons=2000)
    before = {
        s.source_id: {r[spec_for(s.conn_id).primary_key]: r for r in read_rows(s)} for s in systems
    }
    latest = max(max_updated_at(s) for s in systems)

    touched = simulate_changes(systems)

    assert set(touched) == {s.source_id for s in systems}
    for system in systems:
        pk = spec_for(system.conn_id).primary_key
        after = read_rows(system)
        changed = [r for r in after if r["updated_at"] > latest]
        assert len(changed) == touched[system.source_id] > 0, system.source_id
        unchanged = [r for r in after if r["updated_at"] <= latest]
        assert all(before[system.source_id][r[pk]] == r for r in unchanged), system.source_id
        inserted = [r for r in after if r[pk] not in before[system.source_id]]
        assert inserted, f"{system.source_id}: no new rows"
        assert all(r["updated_at"] > latest for r in inserted)
        for key in system.dirty_keys:  # dirty rows stay exactly as they were
            assert before[system.source_id][key] == next(r for r in after if r[pk] == key)
    tables = {s.table: read_rows(s) for s in systems}
    new_people = [r for r in tables["persons"] if r["updated_at"] > latest]
    for row in new_people:
        if row["person_id"] not in systems[0].dirty_keys:
            validate_ric(row["id_number"])
    for row in tables["enterprises"]:
        if row["updated_at"] > latest:
            validate_uscc(row["credit_code"])
    assert sample_applicant(systems) == SAMPLE_APPLICANT_ID

    again = generate_department_systems(tmp_path / "again", persons=2000)
    assert simulate_changes(again) == touched
    assert [digest(s) for s in again] == [digest(s) for s in systems]


def drop_keys(path: Path, key: str) -> list[int]:
    """The primary keys in one dropped file, in file order."""
    if path.suffix == ".csv":
        rows = csv.DictReader(io.StringIO(path.read_bytes().decode("gb18030")))
        return [int(row[key]) for row in rows]
    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        header, *rows = workbook.worksheets[0].iter_rows(values_only=True)
        return [int(row[header.index(key)]) for row in rows]
    finally:
        workbook.close()


def test_changes_reach_the_drop_folders_and_the_api(tmp_path: Path) -> None:
    systems = generate_department_systems(tmp_path, persons=1000)
    latest = max(max_updated_at(s) for s in systems)
    touched = simulate_changes(systems)
    for system in systems:
        pk = spec_for(system.conn_id).primary_key
        changed = sorted(r[pk] for r in read_rows(system) if r["updated_at"] > latest)
        if system.kind == "files":  # a second file, holding exactly the changed rows
            first, second = sorted(system.drop_dir.iterdir())
            assert second.name.endswith("_20250101" + first.suffix)
            assert len(drop_keys(first, pk)) == system.rows
            assert drop_keys(second, pk) == changed
            assert len(changed) == touched[system.source_id]
        elif system.kind == "rest":  # served at once, found by updated_since
            with start_department_api(systems) as api:
                query = urlencode({"updated_since": (latest + dt.timedelta(seconds=1)).isoformat()})
                with urlopen(f"{api.url}{api.path}?{query}", timeout=10) as response:
                    items = json.load(response)["data"]["items"]
            assert sorted(item[pk] for item in items) == changed
            assert len(changed) == touched[system.source_id]


# --- targets and connections ---------------------------------------------------------------------


def test_one_system_written_to_a_url_without_ids_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'marriage.sqlite'}"
    with caplog.at_level(logging.DEBUG, logger="exchange.demo"):
        written = generate_department_systems(databases={"foshan_marriage_db": url}, persons=600)
    [system] = written
    assert (system.conn_id, system.source_id, system.url, system.table, system.kind) == (
        "foshan_marriage_db",
        "foshan_marriage_registry",
        url,
        "marriages",
        "sql",
    )
    assert len(read_rows(system)) == system.rows > 0
    assert caplog.records and not re.search(r"\d{17}[\dX]", caplog.text)
    assert connection_env(written) == {
        "AIRFLOW_CONN_FOSHAN_MARRIAGE_DB": f"sqlite:///{tmp_path / 'marriage.sqlite'}"
    }
    written = generate_department_systems(databases={"foshan_marriage_db": url}, persons=600)
    assert len(read_rows(written[0])) == system.rows  # replaced, not appended
    with pytest.raises(ValueError, match="unknown demo database"):
        generate_department_systems(databases={"foshan_marriage": url})
    with pytest.raises(ValueError, match="drop folder"):  # a file-drop department needs one
        generate_department_systems(databases={"gd_business_db": url})


def test_connection_env_uses_airflow_uris() -> None:
    systems = [
        DemoSystem(
            "gd_household_db",
            "gd_household_registry",
            "postgresql+psycopg://govx:s3cret@127.0.0.1:5432/dept",
            "persons",
            1,
        ),
        DemoSystem(
            "gd_business_db",
            "gd_business_registry",
            "mariadb+pymysql://govx:p%40ss@127.0.0.1:3306/dept?charset=utf8mb4",
            "enterprises",
            1,
        ),
        DemoSystem(
            "nanhai_realestate_db",
            "nanhai_real_estate",
            "sqlite:////var/govx/departments/nanhai_realestate_db.db",
            "property_rights",
            1,
        ),
        DemoSystem(
            "chancheng_birth_db",
            "chancheng_birth_certificates",
            "sqlite:////home/李 雷/chancheng_birth_db.db",
            "birth_records",
            1,
        ),
    ]
    assert connection_env(systems) == {
        "AIRFLOW_CONN_GD_HOUSEHOLD_DB": "postgres://govx:s3cret@127.0.0.1:5432/dept",
        "AIRFLOW_CONN_GD_BUSINESS_DB": "mysql://govx:p%40ss@127.0.0.1:3306/dept?charset=utf8mb4",
        "AIRFLOW_CONN_NANHAI_REALESTATE_DB": "sqlite:////var/govx/departments/nanhai_realestate_db.db",
        "AIRFLOW_CONN_CHANCHENG_BIRTH_DB": "sqlite:////home/%E6%9D%8E%20%E9%9B%B7/chancheng_birth_db.db",
    }


def test_connection_env_of_a_drop_folder_and_the_rest_api() -> None:
    drop = DemoSystem(
        "gd_business_drop",
        "gd_business_registry",
        "sqlite:////var/govx/departments/gd_business_db.db",
        "enterprises",
        1,
        kind="files",
        drop_dir=Path("/var/govx/departments/gd_business_drop"),
    )
    api = DemoSystem(
        "chancheng_birth_api",
        "chancheng_birth_certificates",
        "sqlite:////var/govx/departments/chancheng_birth_db.db",
        "birth_records",
        1,
        kind="rest",
    )
    assert connection_env([drop, api], api_url="http://127.0.0.1:8765") == {
        "AIRFLOW_CONN_GD_BUSINESS_DROP": "file:///var/govx/departments/gd_business_drop",
        "AIRFLOW_CONN_CHANCHENG_BIRTH_API": "http://127.0.0.1:8765",
    }
    assert connection_env([api]) == {}  # no API running: no connection to give


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres_url", marks=pytest.mark.postgres),
        pytest.param("mariadb_url", marks=pytest.mark.mariadb),
    ],
)
def test_all_systems_in_one_server_database(
    server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue(server)
    systems = generate_department_systems(
        tmp_path, databases={spec.store_id: url for spec in SYSTEM_SPECS}, persons=300
    )
    assert all(s.url == url for s in systems)
    rows = {s.table: read_rows(s) for s in systems}
    assert {t: len(r) for t, r in rows.items()} == {s.table: s.rows for s in systems}
    assert any(r["card_valid_to"] is None for r in rows["persons"])
    assert sample_applicant(systems) == SAMPLE_APPLICANT_ID
    touched = simulate_changes(systems)
    assert all(count > 0 for count in touched.values())
    assert sample_applicant(systems) == SAMPLE_APPLICANT_ID
