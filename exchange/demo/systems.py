"""Writing the demo department systems, and what callers need to use them.

:func:`generate_department_systems` writes each system's database (a SQLite file, or any
SQLAlchemy URL: PostgreSQL, MariaDB ...) and, for the two file-drop departments, their first
delivery into a drop folder; :func:`start_department_api` serves the birth records over HTTP;
:func:`connection_env` turns the result into the ``AIRFLOW_CONN_<ID>`` variables that
``config/sources.yaml`` refers to; :func:`sample_applicant` names the applicant of the demo's
intake lookup; :func:`dirty_rows` lists the rows the quality gate must quarantine.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import make_url

from exchange.demo.deliveries import store_records, write_drop
from exchange.demo.departments import (
    DIRTY_ENTERPRISE_IDS,
    DIRTY_PERSON_IDS,
    build_department_rows,
)
from exchange.demo.people import AS_OF, SAMPLE_APPLICANT_ID
from exchange.demo.rest_simulator import Simulator, start_simulator
from exchange.demo.schema import SYSTEM_SPECS, spec_for
from exchange.standards.holder_ids import mask_id

__all__ = [
    "DEMO_SEED",
    "DIRTY_ROWS",
    "DemoSystem",
    "connection_env",
    "department_api_env",
    "dirty_rows",
    "generate_department_systems",
    "sample_applicant",
    "start_department_api",
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
    """One demo department system as written: where it is, what it holds, how it delivers."""

    conn_id: str
    """Matches ``connection:`` in config/sources.yaml, e.g. ``gd_household_db``."""
    source_id: str
    """E.g. ``gd_household_registry``."""
    url: str
    """SQLAlchemy URL of the department's own database, which holds ``table``."""
    table: str
    rows: int
    dirty_keys: tuple[int, ...] = ()
    """Primary keys of rows whose holder identifier is invalid (see :func:`dirty_rows`)."""
    kind: str = "sql"
    """The connector kind the exchange reads it with: ``sql`` (``url`` itself), ``rest`` (the
    API of :func:`start_department_api`) or ``files`` (``drop_dir``)."""
    drop_dir: Path | None = None
    """The folder a file-drop department delivers into."""


def _store_urls(directory: Path | None, databases: Mapping[str, str]) -> dict[str, str]:
    known = {spec.store_id for spec in SYSTEM_SPECS}
    unknown = sorted(set(databases) - known)
    if unknown:
        raise ValueError(f"unknown demo database id(s) {unknown}; expected some of {sorted(known)}")
    urls = {}
    for spec in SYSTEM_SPECS:
        if spec.store_id in databases:
            urls[spec.store_id] = databases[spec.store_id]
        elif directory is not None:
            path = directory / f"{spec.store_id}.db"
            for suffix in ("", "-journal", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            urls[spec.store_id] = f"sqlite:///{path}"
    return urls


def _fresh_drop_dir(directory: Path | None, conn_id: str) -> Path:
    if directory is None:
        raise ValueError(
            f"{conn_id} is a file-drop department: give a directory for its drop folder"
        )
    folder = directory / conn_id
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def _write(url: str, store_id: str, rows: list[dict[str, Any]]) -> None:
    table = spec_for(store_id).table
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
    directory: Path | str | None = None,
    *,
    databases: Mapping[str, str] | None = None,
    seed: int = DEMO_SEED,
    persons: int = 12_000,
) -> list[DemoSystem]:
    """Write the five sample department systems and describe them.

    Each department's database is ``databases[store_id]`` when given (a SQLAlchemy URL; the
    table is dropped and recreated) or else a SQLite file ``<directory>/<store_id>.db``
    (replaced). The file-drop departments also deliver every row as their first drop into
    ``<directory>/<conn_id>/`` (emptied first): ``gd_business_drop`` a GB18030 CSV file,
    ``nanhai_realestate_drop`` an ``.xlsx`` workbook. Without ``directory`` only the systems in
    ``databases`` are written (a file-drop one among them is refused: it needs its folder).

    The same ``seed`` and ``persons`` always give the same rows; ``persons`` residents are
    generated and the other systems scale with it (about a sixth as many enterprises, a quarter
    as many property rights).
    """
    if persons < MIN_PERSONS:  # the dirty rows' fixed ids must exist
        raise ValueError(f"persons must be at least {MIN_PERSONS}, got {persons}")
    if isinstance(directory, Mapping):
        raise TypeError("give department database URLs as databases={store_id: url}")
    folder = None if directory is None else Path(directory).expanduser().resolve()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    urls = _store_urls(folder, databases or {})
    data = build_department_rows(seed, persons)
    systems = []
    for spec in SYSTEM_SPECS:
        if spec.store_id not in urls:
            continue
        rows = data[spec.store_id]
        drop_dir = _fresh_drop_dir(folder, spec.conn_id) if spec.kind == "files" else None
        _write(urls[spec.store_id], spec.store_id, rows)
        if drop_dir is not None:
            write_drop(spec, drop_dir, rows, AS_OF.strftime("%Y%m%d"))
        shown = make_url(urls[spec.store_id]).render_as_string(hide_password=True)
        log.info(
            "demo system %s: %d rows in %s (%s), delivered by %s",
            spec.source_id,
            len(rows),
            spec.table.name,
            shown,
            spec.delivery,
        )
        systems.append(
            DemoSystem(
                conn_id=spec.conn_id,
                source_id=spec.source_id,
                url=urls[spec.store_id],
                table=spec.table.name,
                rows=len(rows),
                dirty_keys=DIRTY_ROWS[spec.source_id],
                kind=spec.kind,
                drop_dir=drop_dir,
            )
        )
    return systems


def start_department_api(
    systems: Sequence[DemoSystem] | Path, *, host: str = "127.0.0.1", port: int = 0
) -> Simulator:
    """Serve the birth records of the REST department over HTTP (already started).

    ``systems`` as :func:`generate_department_systems` returned them, or the directory it wrote
    them to. The API (:mod:`exchange.demo.rest_simulator`, no authentication) reads the
    department's database on every request, so :func:`simulate_changes` shows at once. Use it
    as a context manager; pass its ``.url`` to :func:`connection_env`. ``port=0`` picks a free
    port.
    """
    spec = next(s for s in SYSTEM_SPECS if s.kind == "rest")
    if isinstance(systems, Path):
        path = systems.expanduser().resolve() / f"{spec.store_id}.db"
        if not path.is_file():
            raise FileNotFoundError(f"no demo department database {path} (run `govx demo`)")
        url = f"sqlite:///{path}"
    else:
        system = next((s for s in systems if s.kind == "rest"), None)
        if system is None:
            raise LookupError("the systems include no REST department")
        url = system.url
    return start_simulator(store_records(url, spec.table), host=host, port=port)


def dirty_rows(systems: Sequence[DemoSystem] | None = None) -> dict[str, tuple[int, ...]]:
    """``source_id -> primary keys`` a quality gate must quarantine (see :data:`DIRTY_ROWS`).

    With ``systems``, only their sources; without, all five.
    """
    if systems is None:
        return dict(DIRTY_ROWS)
    return {system.source_id: system.dirty_keys for system in systems}


def _conn_variable(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def department_api_env(api_url: str) -> dict[str, str]:
    """``AIRFLOW_CONN_<CONN_ID>`` -> ``api_url`` for the REST department's connection."""
    spec = next(s for s in SYSTEM_SPECS if s.kind == "rest")
    return {_conn_variable(spec.conn_id): api_url}


def connection_env(systems: Sequence[DemoSystem], *, api_url: str | None = None) -> dict[str, str]:
    """``AIRFLOW_CONN_<CONN_ID>`` -> Airflow-style connection URI, one per system.

    A database read directly: SQLite becomes ``sqlite:////abs/path.db``; PostgreSQL
    ``postgres://...`` and MySQL/MariaDB ``mysql://...`` (Airflow's connection types; the driver
    is the resolver's choice). A drop folder: ``file:///abs/folder``. The REST department:
    ``api_url`` (a running :func:`start_department_api`'s ``.url``); without it, it is left
    out. Values may hold passwords: put them in the environment or a ``.env`` file, never in a
    log line.
    """
    env = {}
    for system in systems:
        variable = _conn_variable(system.conn_id)
        if system.kind == "rest":
            if api_url is not None:
                env.update(department_api_env(api_url))
            continue
        if system.drop_dir is not None:
            env[variable] = system.drop_dir.as_uri()
            continue
        url = make_url(system.url)
        backend = url.get_backend_name()
        if backend == "sqlite":  # percent-encoded like every Airflow URI; '/' stays as it is
            uri = f"sqlite:///{quote(url.database)}" if url.database else "sqlite://"
        else:
            scheme = _AIRFLOW_SCHEMES.get(backend, backend)
            uri = url.set(drivername=scheme).render_as_string(hide_password=False)
        env[variable] = uri
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
