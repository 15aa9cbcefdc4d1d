"""A deterministic "next day" in the demo department systems, for incremental syncs.

:func:`simulate_changes` reads the systems as they are, updates about ``fraction`` of each
table's rows the way a working day would (households move, cards are renewed, young adults move
out, couples divorce, birth certificates are re-issued, enterprises change or close, property is
sold or sealed) and inserts a few new rows (newborns registered in their parents' household,
newcomers, weddings of two residents who lived alone, new births, new enterprises, new property
registrations). Every touched row gets an ``updated_at`` strictly later than every
``updated_at`` in the given systems, so a cursor-based sync (the SQL databases, the REST API's
``updated_since``) picks up exactly these rows; a file-drop department delivers the touched rows,
whole, as a new file in its drop folder. The sample applicant's family and the dirty rows are
never touched.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.engine import Engine, create_engine

from exchange.demo.deliveries import write_drop
from exchange.demo.departments import (
    birth_cert_no,
    enterprise_row,
    marriage_office,
    pick_hospital,
    property_cert_no,
    property_parcel,
)
from exchange.demo.people import (
    RESIDENCE_REGIONS,
    SAMPLE_APPLICANT_ID,
    ResidentIds,
    age_on,
    card_term_years,
    given_name,
    id_region_code,
    new_resident,
    region_by_code,
    street_address,
    surname,
)
from exchange.demo.schema import spec_for
from exchange.demo.systems import DEMO_SEED, DemoSystem
from exchange.standards.dates import add_years

__all__ = ["simulate_changes"]

Row = dict[str, Any]
_TWO_CHARACTER_SURNAMES = ("欧阳", "司徒")
_PROPERTY_CERT = re.compile(r"粤\((\d{4})\)佛山市不动产权第(\d{7})号")
_MARRIAGE_CERT = re.compile(r"J(\d{6})-(\d{4})-(\d{6})")
_FOSHAN_COUNTIES = ("440604", "440605", "440606")


class _Clock:
    """Timestamps of the day's changes: office hours of the day after the latest existing one."""

    def __init__(self, rng: random.Random, latest: dt.datetime) -> None:
        self.rng = rng
        self.now = dt.datetime.combine(latest.date() + dt.timedelta(days=1), dt.time(8, 30))
        self.day = self.now.date()

    def tick(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=self.rng.randint(3, 90))
        return self.now


class _System:
    """One system's rows as read, plus the day's updates and inserts."""

    def __init__(self, system: DemoSystem, engine: Engine) -> None:
        self.system = system
        self.engine = engine
        self.table = spec_for(system.conn_id).table
        self.pk = spec_for(system.conn_id).primary_key
        with engine.connect() as connection:
            result = connection.execute(select(self.table).order_by(self.table.c[self.pk]))
            self.rows: list[Row] = [dict(r) for r in result.mappings()]
        self.updates: dict[int, Row] = {}
        self.inserts: list[Row] = []
        self.skip: set[int] = set(system.dirty_keys)

    def latest(self) -> dt.datetime | None:
        with self.engine.connect() as connection:
            return connection.execute(select(func.max(self.table.c.updated_at))).scalar()

    def eligible(self, predicate: Any = None) -> list[Row]:
        return [
            r
            for r in self.rows
            if r[self.pk] not in self.skip
            and r[self.pk] not in self.updates
            and (predicate is None or predicate(r))
        ]

    def change(self, row: Row, clock: _Clock, **values: Any) -> None:
        values["updated_at"] = clock.tick()
        row.update(values)
        self.updates.setdefault(row[self.pk], {}).update(values)

    def add(self, row: Row, clock: _Clock) -> None:
        row[self.pk] = max([r[self.pk] for r in self.rows], default=0) + 1
        row["updated_at"] = clock.tick()
        self.rows.append(row)
        self.inserts.append(row)

    def apply(self, connection: Connection) -> int:
        column = self.table.c[self.pk]
        for key, values in self.updates.items():
            connection.execute(update(self.table).where(column == key).values(**values))
        if self.inserts:
            connection.execute(insert(self.table), self.inserts)
        return len(self.updates) + len(self.inserts)

    def deliver(self, day: dt.date) -> None:
        """A file-drop department drops the day's touched rows, whole, as a new file."""
        if self.system.drop_dir is None:
            return
        touched = {r[self.pk]: r for r in self.rows if r[self.pk] in self.updates}
        touched.update((r[self.pk], r) for r in self.inserts)
        if touched:
            spec = spec_for(self.system.conn_id)
            write_drop(spec, self.system.drop_dir, list(touched.values()), f"{day:%Y%m%d}")


def _quota(rows: int, fraction: float) -> int:
    return max(1, round(rows * fraction))


def _surname_of(name: str) -> str:
    return name[:2] if name[:2] in _TWO_CHARACTER_SURNAMES else name[:1]


def _take(rng: random.Random, rows: list[Row], count: int) -> list[Row]:
    return rng.sample(rows, min(count, len(rows)))


def _adults(persons: _System | None, day: dt.date, ages: tuple[int, int]) -> list[Row]:
    if persons is None:
        return []
    return [
        r
        for r in persons.rows
        if r[persons.pk] not in persons.skip
        and r["household_status"] == "正常"
        and r["id_number"] != SAMPLE_APPLICANT_ID
        and ages[0] <= age_on(r["birth_date"], day) <= ages[1]
    ]


# --- household registry --------------------------------------------------------------------------


def _household_changes(
    rng: random.Random, persons: _System, births: _System | None, clock: _Clock, fraction: float
) -> None:
    quota = _quota(len(persons.rows), fraction)
    day = clock.day
    households: dict[str, list[Row]] = {}
    for row in persons.rows:
        households.setdefault(row["household_no"], []).append(row)
    sample_household = next(
        (r["household_no"] for r in persons.rows if r["id_number"] == SAMPLE_APPLICANT_ID), None
    )
    movable = [
        members
        for number, members in households.items()
        if number != sample_household
        and all(
            m["household_status"] == "正常" and m[persons.pk] not in persons.skip for m in members
        )
    ]
    for row in persons.rows:  # the sample family stays as it is
        if row["household_no"] == sample_household:
            persons.skip.add(row[persons.pk])

    touched = 0
    for members in _take(rng, movable, quota):  # a household moves within its county
        if touched >= quota // 2:
            break
        region = region_by_code(members[0]["register_no"][:6])
        address = "广东省" + street_address(rng, region)
        for member in members:
            persons.change(member, clock, address=address)
        touched += len(members)

    due = persons.eligible(
        lambda r: (
            r["household_status"] == "正常"
            and r["card_valid_to"] is not None
            and r["card_valid_to"] < day + dt.timedelta(days=30)
        )
    )
    for row in _take(rng, due, max(1, quota // 4)):  # expired or expiring cards renewed
        persons.change(row, clock, **_card(day, row["birth_date"]))

    leaving = persons.eligible(
        lambda r: (
            r["relation"] == "子女"
            and r["household_status"] == "正常"
            and 18 <= age_on(r["birth_date"], day) <= 35
        )
    )
    for row in _take(rng, leaving, max(1, quota // 10)):  # moved out for work or study
        persons.change(row, clock, household_status="迁出")

    deceased = persons.eligible(
        lambda r: r["household_status"] == "正常" and age_on(r["birth_date"], day) >= 85
    )
    for row in _take(rng, deceased, 1):
        persons.change(row, clock, household_status="注销")

    if births is not None:
        _register_newborns(rng, persons, births, clock)
    _newcomers(rng, persons, clock, max(1, round(len(persons.rows) / 2000)))


class _Registers:
    """New register and household numbers, continuing each county's series."""

    def __init__(self, rng: random.Random, rows: list[Row]) -> None:
        self.rng = rng
        self.serials: dict[str, int] = {}
        self.households: dict[str, int] = {}
        for row in rows:
            county = row["register_no"][:6]
            self.serials[county] = max(self.serials.get(county, 0), int(row["register_no"][6:]))
            number = int(row["household_no"][4:])
            self.households[county] = max(self.households.get(county, 0), number)

    def register_no(self, county: str) -> str:
        self.serials[county] = self.serials.get(county, 10_000_000) + self.rng.randint(1, 40)
        return f"{county}{self.serials[county]:09d}"

    def household_no(self, county: str) -> str:
        self.households[county] = self.households.get(county, 0) + self.rng.randint(1, 9)
        return f"{county[2:]}{self.households[county]:06d}"


def _card(day: dt.date, birth: dt.date) -> dict[str, dt.date | None]:
    term = card_term_years(age_on(birth, day))
    return {
        "card_issue_date": day,
        "card_valid_from": day,
        "card_valid_to": add_years(day, term) if term else None,
    }


def _newcomers(rng: random.Random, persons: _System, clock: _Clock, count: int) -> None:
    """People who move to the province register a household of their own (迁入)."""
    day = clock.day
    ids = ResidentIds([r["id_number"] for r in persons.rows])
    registers = _Registers(rng, persons.rows)
    foshan = [r for r in RESIDENCE_REGIONS if r.in_foshan]
    for _ in range(count):
        region = rng.choices(foshan, [r.weight for r in foshan])[0]
        gender = rng.choice("男女")
        year = rng.randint(1975, 2002)
        birth = dt.date(year, rng.randint(1, 12), rng.randint(1, 28))
        person = new_resident(rng, ids, region, gender, birth, migrant_share=1.0)
        persons.add(
            {
                "id_number": person.id_number,
                "name": person.name,
                "gender": gender,
                "ethnicity": person.ethnicity,
                "birth_date": birth,
                "address": "广东省" + street_address(rng, region),
                "household_no": registers.household_no(region.code),
                "relation": "户主",
                "register_no": registers.register_no(region.code),
                "registered_on": day,
                "household_status": "正常",
                **_card(day, birth),
                "card_authority": region.card_authority,
            },
            clock,
        )


def _register_newborns(
    rng: random.Random, persons: _System, births: _System, clock: _Clock
) -> None:
    """Babies with a birth certificate but no household registration yet are registered."""
    day = clock.day
    known = {(r["name"], r["birth_date"]) for r in persons.rows}
    mothers = {r["id_number"]: r for r in persons.rows if r["household_status"] == "正常"}
    ids = ResidentIds([r["id_number"] for r in persons.rows])
    registers = _Registers(rng, persons.rows)
    for birth in births.rows:
        mother = mothers.get(birth["mother_id"])
        if (
            mother is None
            or birth["mother_id"] == SAMPLE_APPLICANT_ID  # her daughter is the demo's matter
            or (birth["baby_name"], birth["birth_date"]) in known
            or (day - birth["birth_date"]).days > 90
            or birth["birth_date"] >= day
        ):
            continue
        county = mother["register_no"][:6]
        region = region_by_code(county)
        persons.add(
            {
                "id_number": ids.issue(
                    rng,
                    id_region_code(rng, region, birth["birth_date"].year),
                    birth["birth_date"],
                    birth["baby_gender"],
                ),
                "name": birth["baby_name"],
                "gender": birth["baby_gender"],
                "ethnicity": mother["ethnicity"],
                "birth_date": birth["birth_date"],
                "address": mother["address"],
                "household_no": mother["household_no"],
                "relation": "子女",
                "register_no": registers.register_no(county),
                "registered_on": day,
                "household_status": "正常",
                **_card(day, birth["birth_date"]),
                "card_authority": region.card_authority,
            },
            clock,
        )
        known.add((birth["baby_name"], birth["birth_date"]))


# --- marriages and births ------------------------------------------------------------------------


def _marriage_changes(
    rng: random.Random, marriages: _System, clock: _Clock, fraction: float
) -> None:
    married = marriages.eligible(
        lambda r: (
            r["marital_status"] == "已婚"
            and SAMPLE_APPLICANT_ID not in (r["wife_id"], r["husband_id"])
        )
    )
    for row in _take(rng, married, _quota(len(marriages.rows), fraction)):
        marriages.change(row, clock, marital_status="离婚")


def _weddings(rng: random.Random, persons: _System, marriages: _System, clock: _Clock) -> None:
    """Two residents of Foshan who live alone marry; she moves into his household."""
    day = clock.day
    married = {r["husband_id"] for r in marriages.rows} | {r["wife_id"] for r in marriages.rows}
    sizes = Counter(r["household_no"] for r in persons.rows)

    def single(row: Row, gender: str, ages: tuple[int, int]) -> bool:
        return (
            row["gender"] == gender
            and sizes[row["household_no"]] == 1
            and row["register_no"][:6] in _FOSHAN_COUNTIES
            and row["id_number"] not in married
            and ages[0] <= age_on(row["birth_date"], day) <= ages[1]
        )

    grooms = [r for r in _adults(persons, day, (22, 40)) if single(r, "男", (22, 40))]
    brides = [r for r in _adults(persons, day, (20, 38)) if single(r, "女", (20, 38))]
    serials: dict[str, int] = {}
    for row in marriages.rows:
        if m := _MARRIAGE_CERT.fullmatch(row["cert_no"]):
            serials[m[1] + m[2]] = max(serials.get(m[1] + m[2], 0), int(m[3]))
    count = min(len(grooms), len(brides), max(1, round(len(marriages.rows) / 500)))
    for groom, bride in zip(_take(rng, grooms, count), _take(rng, brides, count), strict=True):
        code, office = marriage_office(rng, region_by_code(groom["register_no"][:6]), day.year)
        key = f"{code}{day.year}"
        serials[key] = serials.get(key, rng.randint(1, 400)) + rng.randint(1, 25)
        marriages.add(
            {
                "cert_no": f"J{code}-{day.year}-{serials[key]:06d}",
                "husband_id": groom["id_number"],
                "husband_name": groom["name"],
                "wife_id": bride["id_number"],
                "wife_name": bride["name"],
                "register_date": day,
                "register_office": office,
                "marital_status": "已婚",
            },
            clock,
        )
        persons.change(
            bride,
            clock,
            household_no=groom["household_no"],
            address=groom["address"],
            relation="配偶",
            registered_on=day,
        )


def _birth_changes(
    rng: random.Random,
    births: _System,
    persons: _System | None,
    marriages: _System | None,
    clock: _Clock,
    fraction: float,
) -> None:
    day = clock.day
    taken = {r["cert_no"] for r in births.rows}
    reissued = births.eligible(lambda r: r["mother_id"] != SAMPLE_APPLICANT_ID)
    for row in _take(rng, reissued, _quota(len(births.rows), fraction)):  # 补发: a new number
        births.change(row, clock, cert_no=birth_cert_no(rng, day.year, taken), issue_date=day)

    recent = {r["mother_id"] for r in births.rows if (day - r["birth_date"]).days < 400}
    if marriages is not None:
        couples = [
            (r["wife_id"], r["wife_name"], r["husband_id"], r["husband_name"])
            for r in marriages.rows
            if r["marital_status"] == "已婚"
        ]
    else:
        couples = [
            (r["mother_id"], r["mother_name"], r["father_id"], r["father_name"])
            for r in births.rows
        ]
    if persons is not None:
        mothers = {
            r["id_number"]
            for r in _adults(persons, day, (22, 40))
            if r["register_no"].startswith("440604")
        }
        couples = [c for c in couples if c[0] in mothers]
    couples = [c for c in couples if c[0] not in recent and SAMPLE_APPLICANT_ID not in c]
    for mother_id, mother_name, father_id, father_name in _take(
        rng, couples, max(2, round(len(births.rows) / 400))
    ):
        gender = "男" if rng.random() < 0.52 else "女"
        born = day - dt.timedelta(days=rng.randint(1, 3))
        births.add(
            {
                "cert_no": birth_cert_no(rng, day.year, taken),
                "baby_name": _surname_of(father_name) + given_name(rng, gender, born.year),
                "baby_gender": gender,
                "birth_date": born,
                "birth_place": pick_hospital(rng),
                "mother_id": mother_id,
                "mother_name": mother_name,
                "father_id": father_id,
                "father_name": father_name,
                "issue_date": day,
            },
            clock,
        )


# --- enterprises and property --------------------------------------------------------------------


def _moved(rng: random.Random, enterprise: Row) -> str:
    """A new address in the county of the enterprise's registration authority."""
    try:
        return street_address(rng, region_by_code(enterprise["credit_code"][2:8]))
    except KeyError:
        return enterprise["address"] + "之二"


def _enterprise_changes(
    rng: random.Random,
    enterprises: _System,
    persons: _System | None,
    clock: _Clock,
    fraction: float,
) -> None:
    day = clock.day
    reps = _adults(persons, day, (22, 65))

    def new_rep() -> str:
        if reps:
            return rng.choice(reps)["name"]
        gender = rng.choice("男女")
        return surname(rng) + given_name(rng, gender, 1980)

    active = enterprises.eligible(lambda r: r["reg_status"] == "存续")
    for row in _take(rng, active, _quota(len(enterprises.rows), fraction)):
        roll = rng.random()
        if roll < 0.4:
            enterprises.change(row, clock, reg_status="注销")
        elif roll < 0.7:
            enterprises.change(row, clock, address=_moved(rng, row), license_issue_date=day)
        elif roll < 0.85:
            enterprises.change(row, clock, legal_rep=new_rep(), license_issue_date=day)
        else:
            capital = int(re.sub(r"\D", "", row["registered_capital"] or "") or 10) * 2
            enterprises.change(
                row, clock, registered_capital=f"{capital}万元人民币", license_issue_date=day
            )

    codes = {r["credit_code"] for r in enterprises.rows}
    names = {r["name"] for r in enterprises.rows}
    foshan = [r for r in RESIDENCE_REGIONS if r.in_foshan]
    for _ in range(max(2, round(len(enterprises.rows) / 200))):
        region = rng.choices(foshan, [r.weight for r in foshan])[0]
        row = enterprise_row(rng, 0, region, day, new_rep(), codes, names, as_of=day)
        row.update(reg_status="存续", license_issue_date=day)
        enterprises.add(row, clock)


def _property_changes(
    rng: random.Random,
    properties: _System,
    persons: _System | None,
    clock: _Clock,
    fraction: float,
) -> None:
    day = clock.day
    family: set[str] = {SAMPLE_APPLICANT_ID}
    if persons is not None:
        household = next(
            (r["household_no"] for r in persons.rows if r["id_number"] == SAMPLE_APPLICANT_ID),
            None,
        )
        family |= {r["id_number"] for r in persons.rows if r["household_no"] == household}
    buyers = _adults(persons, day, (22, 75))
    sequence = max(
        (
            int(m[2])
            for r in properties.rows
            if (m := _PROPERTY_CERT.fullmatch(r["cert_no"])) and int(m[1]) == day.year
        ),
        default=rng.randint(10_000, 60_000),
    )

    def register(owner: Row, location: str, area: str, usage: str, right: str) -> None:
        nonlocal sequence
        sequence += rng.randint(1, 15)
        properties.add(
            {
                "cert_no": property_cert_no(day.year, sequence),
                "owner_id": owner["id_number"],
                "owner_name": owner["name"],
                "location": location,
                "area_m2": area,
                "usage": usage,
                "right_type": right,
                "register_date": day,
                "right_status": "正常",
            },
            clock,
        )

    current = properties.eligible(
        lambda r: r["right_status"] == "正常" and r["owner_id"] not in family
    )
    for row in _take(rng, current, _quota(len(properties.rows), fraction)):
        if buyers and rng.random() < 0.5:  # sold: the old certificate ends, the buyer gets one
            properties.change(row, clock, right_status="注销")
            register(
                rng.choice(buyers), row["location"], row["area_m2"], row["usage"], row["right_type"]
            )
        else:
            properties.change(row, clock, right_status="查封")
    if buyers:
        for _ in range(max(2, round(len(properties.rows) / 500))):  # first registrations
            register(rng.choice(buyers), *property_parcel(rng))


# --- the day -------------------------------------------------------------------------------------


def simulate_changes(
    systems: Sequence[DemoSystem], *, seed: int = DEMO_SEED + 1, fraction: float = 0.01
) -> dict[str, int]:
    """Apply one deterministic day of changes to ``systems``; ``source_id -> rows touched``.

    About ``fraction`` of each table's rows are updated and a few rows are inserted; every
    touched row's ``updated_at`` is later than every existing ``updated_at`` in ``systems``.
    Each system changes in one transaction; a file-drop department then drops a file of its
    touched rows. Running it again simulates the following day.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    rng = random.Random(seed)
    engines = {s.source_id: create_engine(s.url) for s in systems}
    try:
        loaded = {s.source_id: _System(s, engines[s.source_id]) for s in systems}
        stamps = [t for t in (system.latest() for system in loaded.values()) if t is not None]
        clock = _Clock(rng, max(stamps, default=dt.datetime(2024, 12, 31, 18, 0)))
        persons = loaded.get("gd_household_registry")
        marriages = loaded.get("foshan_marriage_registry")
        births = loaded.get("chancheng_birth_certificates")
        enterprises = loaded.get("gd_business_registry")
        properties = loaded.get("nanhai_real_estate")
        if persons is not None:
            _household_changes(rng, persons, births, clock, fraction)
        if marriages is not None:
            _marriage_changes(rng, marriages, clock, fraction)
            if persons is not None:
                _weddings(rng, persons, marriages, clock)
        if births is not None:
            _birth_changes(rng, births, persons, marriages, clock, fraction)
        if enterprises is not None:
            _enterprise_changes(rng, enterprises, persons, clock, fraction)
        if properties is not None:
            _property_changes(rng, properties, persons, clock, fraction)
        touched = {}
        for source_id, system in loaded.items():
            with system.engine.begin() as connection:
                touched[source_id] = system.apply(connection)
            system.deliver(clock.day)
        return touched
    finally:
        for engine in engines.values():
            engine.dispose()
