"""Writing the demo department systems to databases, and what callers need to use them.

:func:`generate_department_systems` writes each system to its own SQLite file or to any
SQLAlchemy URL (PostgreSQL, MariaDB ...); :func:`connection_env` turns the result into the
``AIRFLOW_CONN_<ID>`` variables that ``config/sources.yaml`` refers to; :func:`sample_applicant`
names the applicant of the demo's intake lookup; :func:`dirty_rows` lists the rows the quality
gate must quarantine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import make_url

from exchange.demo.departments import (
    DIRTY_ENTERPRISE_IDS,
    DIRTY_PERSON_IDS,
    build_department_rows,
)
from exchange.demo.people import SAMPLE_APPLICANT_ID
from exchange.demo.schema import SYSTEM_SPECS, spec_for
from exchange.standards.holder_ids import mask_id

__all__ = [
    "DEMO_SEED",
    "DIRTY_ROWS",
    "DemoSystem",
    "connection_env",
    "dirty_rows",
    "generate_department_systems",
    "sample_applicant",
]

log = logging.getLogger(__name__)

DEMO_SEED = 20161
"""The fixed default seed of ``govx demo`` and the tests."""
MIN_PERSONS = 100
_BATCH = 5_000
DIRTY_ROWS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {
        "gd_household_registry": DIRTY_PERSON_IDS,
        "foshan_marriage_registry": (),
        "chancheng_birth_certificates": (),
        "gd_business_registry": DIRTY_ENTERPRISE_IDS,
        "nanhai_real_estate": (),
    }
)
"""``source_id -> primary keys`` of the rows whose holder identifier is invalid, the same for
every seed and size: in the household registry three resident IDs with a wrong check character
(persons 7, 33, 61) and one with an impossible birth date (97); in the business registry one
credit code with a wrong check character (enterprise 13). Every other row is valid."""
_AIRFLOW_SCHEMES = {"postgresql": "postgres", "mariadb": "mysql", "mysql": "mysql"}


@dataclass(frozen=True)
class DemoSystem:
    """One demo department system as written: where it is and what it holds."""

    conn_id: str
    """Matches ``connection:`` in config/sources.yaml, e.g. ``gd_household_db``."""
    source_id: str
    """E.g. ``gd_household_registry``."""
    url: str
    """SQLAlchemy URL of the database the table was written to."""
    table: str
    rows: int
    dirty_keys: tuple[int, ...] = ()
    """Primary keys of rows whose holder identifier is invalid (see :func:`dirty_rows`)."""


def _target_urls(target: Path | str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(target, Mapping):
        known = {spec.conn_id for spec in SYSTEM_SPECS}
        unknown = sorted(set(target) - known)
        if unknown:
            raise ValueError(
                f"unknown demo connection id(s) {unknown}; expected some of {sorted(known)}"
            )
        return {s.conn_id: target[s.conn_id] for s in SYSTEM_SPECS if s.conn_id in target}
    directory = Path(target).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    urls = {}
    for spec in SYSTEM_SPECS:
        path = directory / f"{spec.conn_id}.db"
        for suffix in ("", "-journal", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        urls[spec.conn_id] = f"sqlite:///{path}"
    return urls


def _write(url: str, conn_id: str, rows: list[dict[str, Any]]) -> None:
    table = spec_for(conn_id).table
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            table.drop(connection, checkfirst=True)
            table.create(connection)
            for start in range(0, len(rows), _BATCH):
                connection.execute(insert(table), rows[start : start + _BATCH])
    finally:
        engine.dispose()


def generate_department_systems(
    target: Path | Mapping[str, str], *, seed: int = DEMO_SEED, persons: int = 12_000
) -> list[DemoSystem]:
    """Write the five sample department systems and describe them.

    ``target`` is a directory (one SQLite file per system, ``<dir>/<conn_id>.db``, replaced if it
    exists) or a mapping ``conn_id -> SQLAlchemy URL`` naming some or all systems (the table is
    dropped and recreated). The same ``seed`` and ``persons`` always give the same rows;
    ``persons`` residents are generated and the other systems scale with it (about a sixth as
    many enterprises, a quarter as many property rights).
    """
    if persons < MIN_PERSONS:  # the dirty rows' fixed ids must exist
        raise ValueError(f"persons must be at least {MIN_PERSONS}, got {persons}")
    urls = _target_urls(target)
    data = build_department_rows(seed, persons)
    systems = []
    for spec in SYSTEM_SPECS:
        if spec.conn_id not in urls:
            continue
        rows = data[spec.conn_id]
        _write(urls[spec.conn_id], spec.conn_id, rows)
        shown = make_url(urls[spec.conn_id]).render_as_string(hide_password=True)
        log.info(
            "demo system %s: %d rows in %s (%s)", spec.source_id, len(rows), spec.table.name, shown
        )
        systems.append(
            DemoSystem(
                conn_id=spec.conn_id,
                source_id=spec.source_id,
                url=urls[spec.conn_id],
                table=spec.table.name,
                rows=len(rows),
                dirty_keys=DIRTY_ROWS[spec.source_id],
            )
        )
    return systems


def dirty_rows(systems: Sequence[DemoSystem] | None = None) -> dict[str, tuple[int, ...]]:
    """``source_id -> primary keys`` a quality gate must quarantine (see :data:`DIRTY_ROWS`).

    With ``systems``, only their sources; without, all five.
    """
    if systems is None:
        return dict(DIRTY_ROWS)
    return {system.source_id: system.dirty_keys for system in systems}


def connection_env(systems: Sequence[DemoSystem]) -> dict[str, str]:
    """``AIRFLOW_CONN_<CONN_ID>`` -> Airflow-style connection URI, one per system.

    SQLite becomes ``sqlite:////abs/path.db``; PostgreSQL ``postgres://...`` and MySQL/MariaDB
    ``mysql://...`` (Airflow's connection types; the driver is the resolver's choice). Values may
    hold passwords: put them in the environment or a ``.env`` file, never in a log line.
    """
    env = {}
    for system in systems:
        url = make_url(system.url)
        backend = url.get_backend_name()
        if backend == "sqlite":  # percent-encoded like every Airflow URI; '/' stays as it is
            uri = f"sqlite:///{quote(url.database)}" if url.database else "sqlite://"
        else:
            scheme = _AIRFLOW_SCHEMES.get(backend, backend)
            uri = url.set(drivername=scheme).render_as_string(hide_password=False)
        env[f"AIRFLOW_CONN_{system.conn_id.upper()}"] = uri
    return env


def _fetch_one(system: DemoSystem, column: str, value: str) -> dict[str, Any] | None:
    table = spec_for(system.conn_id).table
    engine = create_engine(system.url)
    try:
        with engine.connect() as connection:
            row = (
                connection.execute(select(table).where(table.c[column] == value).limit(1))
                .mappings()
                .first()
            )
    finally:
        engine.dispose()
    return dict(row) if row is not None else None


def sample_applicant(systems: Sequence[DemoSystem]) -> str:
    """The resident ID of the demo's applicant for 新生儿入户登记 (a synthetic mother).

    She holds every license material of that matter: a resident ID card and a household
    register (正常), a marriage certificate (已婚) and her newborn daughter's birth medical
    certificate; the newborn is not in the household register yet. She also owns a flat in
    南海区. Always the same person, whatever the seed; ``LookupError`` if ``systems`` lack one
    of the three systems or the records (e.g. a changed database).
    """
    by_source = {s.source_id: s for s in systems}
    needed = {
        "gd_household_registry": ("id_number", "household_status", "正常"),
        "foshan_marriage_registry": ("wife_id", "marital_status", "已婚"),
        "chancheng_birth_certificates": ("mother_id", None, None),
    }
    missing = sorted(set(needed) - set(by_source))
    if missing:
        raise LookupError(f"sample_applicant needs the demo systems {missing}")
    for source_id, (column, status_column, status) in needed.items():
        row = _fetch_one(by_source[source_id], column, SAMPLE_APPLICANT_ID)
        if row is None or (status_column and row[status_column] != status):
            raise LookupError(
                f"{source_id}: no record of the sample applicant {mask_id(SAMPLE_APPLICANT_ID)}"
                + (f" with {status_column}={status}" if status_column else "")
            )
    return SAMPLE_APPLICANT_ID
