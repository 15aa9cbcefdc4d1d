"""The five demo department systems: their tables (SQLAlchemy Core) and how each delivers data.

Each system keeps its rows in its own database (``store_id``, e.g. ``gd_business_db``) and hands
them to the exchange one way (``delivery``): the exchange reads the household and marriage
databases directly (``sql``), asks the birth records of the health department's REST API
(``rest``, served by :mod:`exchange.demo.rest_simulator`), and loads the GB18030 CSV files
(``csv``) and ``.xlsx`` workbooks (``xlsx``) the market-regulation and natural-resources
departments drop into folders. ``conn_id`` is the connection ``config/sources.yaml`` names.

Column names follow ``config/sources.yaml`` (every column a ``licenses:`` mapping names, the
primary key and the ``updated_at`` cursor). Each table has its own ``MetaData`` because each
system is a separate database. String lengths are given so that MariaDB accepts the DDL;
``mysql_charset`` keeps Chinese text intact there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Column, Date, DateTime, Index, Integer, MetaData, String, Table, Text

__all__ = ["SYSTEM_SPECS", "Delivery", "SystemSpec", "spec_for"]

Delivery = Literal["sql", "rest", "csv", "xlsx"]

_MYSQL = {"mysql_charset": "utf8mb4"}


def _persons() -> Table:
    return Table(
        "persons",
        MetaData(),
        Column("person_id", Integer, primary_key=True, autoincrement=False),
        Column("id_number", String(18), nullable=False),
        Column("name", String(32), nullable=False),
        Column("gender", String(2), nullable=False),
        Column("ethnicity", String(16), nullable=False),
        Column("birth_date", Date, nullable=False),
        Column("address", String(200), nullable=False),
        Column("household_no", String(16), nullable=False),
        Column("relation", String(8), nullable=False),
        Column("register_no", String(20), nullable=False, unique=True),
        Column("registered_on", Date, nullable=False),
        Column("household_status", String(8), nullable=False),
        Column("card_issue_date", Date),
        Column("card_valid_from", Date),
        Column("card_valid_to", Date, comment="NULL = long-term (长期)"),
        Column("card_authority", String(64)),
        Column("updated_at", DateTime, nullable=False),
        Index("ix_persons_id_number", "id_number"),
        Index("ix_persons_updated_at", "updated_at"),
        comment="常住人口登记 (synthetic demo data)",
        **_MYSQL,
    )


def _marriages() -> Table:
    return Table(
        "marriages",
        MetaData(),
        Column("marriage_id", Integer, primary_key=True, autoincrement=False),
        Column("cert_no", String(32), nullable=False, unique=True),
        Column("husband_id", String(18), nullable=False),
        Column("husband_name", String(32), nullable=False),
        Column("wife_id", String(18), nullable=False),
        Column("wife_name", String(32), nullable=False),
        Column("register_date", Date, nullable=False),
        Column("register_office", String(64), nullable=False),
        Column("marital_status", String(8), nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Index("ix_marriages_updated_at", "updated_at"),
        comment="婚姻登记 (synthetic demo data)",
        **_MYSQL,
    )


def _birth_records() -> Table:
    return Table(
        "birth_records",
        MetaData(),
        Column("record_id", Integer, primary_key=True, autoincrement=False),
        Column("cert_no", String(16), nullable=False, unique=True),
        Column("baby_name", String(32), nullable=False),
        Column("baby_gender", String(2), nullable=False),
        Column("birth_date", Date, nullable=False),
        Column("birth_place", String(64), nullable=False),
        Column("mother_id", String(18), nullable=False),
        Column("mother_name", String(32), nullable=False),
        Column("father_id", String(18)),
        Column("father_name", String(32)),
        Column("issue_date", Date, nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Index("ix_birth_records_updated_at", "updated_at"),
        comment="出生医学证明 (synthetic demo data)",
        **_MYSQL,
    )


def _enterprises() -> Table:
    return Table(
        "enterprises",
        MetaData(),
        Column("ent_id", Integer, primary_key=True, autoincrement=False),
        Column("credit_code", String(18), nullable=False),
        Column("name", String(100), nullable=False),
        Column("legal_rep", String(32), nullable=False),
        Column("registered_capital", String(32)),
        Column("address", String(200), nullable=False),
        Column("established_on", Date, nullable=False),
        Column("business_scope", Text),
        Column("reg_status", String(8), nullable=False),
        Column("license_issue_date", Date, nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Index("ix_enterprises_credit_code", "credit_code"),
        Index("ix_enterprises_updated_at", "updated_at"),
        comment="商事主体登记 (synthetic demo data)",
        **_MYSQL,
    )


def _property_rights() -> Table:
    return Table(
        "property_rights",
        MetaData(),
        Column("right_id", Integer, primary_key=True, autoincrement=False),
        Column("cert_no", String(48), nullable=False, unique=True),
        Column("owner_id", String(18), nullable=False),
        Column("owner_name", String(32), nullable=False),
        Column("location", String(200), nullable=False),
        Column("area_m2", String(16), nullable=False),
        Column("usage", String(16), nullable=False),
        Column("right_type", String(32), nullable=False),
        Column("register_date", Date, nullable=False),
        Column("right_status", String(8), nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Index("ix_property_rights_owner_id", "owner_id"),
        Index("ix_property_rights_updated_at", "updated_at"),
        comment="不动产登记 (synthetic demo data)",
        **_MYSQL,
    )


@dataclass(frozen=True)
class SystemSpec:
    """A demo department system: its database, connection, source, table and delivery."""

    store_id: str
    """The department's own database, e.g. ``gd_business_db``."""
    conn_id: str
    """The exchange's connection to what the department delivers, e.g. ``gd_business_drop``."""
    source_id: str
    table: Table
    delivery: Delivery

    @property
    def primary_key(self) -> str:
        return self.table.primary_key.columns.values()[0].name

    @property
    def kind(self) -> str:
        """The connector kind the exchange reads this system with: sql, rest or files."""
        return "files" if self.delivery in ("csv", "xlsx") else self.delivery


SYSTEM_SPECS: tuple[SystemSpec, ...] = (
    SystemSpec("gd_household_db", "gd_household_db", "gd_household_registry", _persons(), "sql"),
    SystemSpec(
        "foshan_marriage_db", "foshan_marriage_db", "foshan_marriage_registry", _marriages(), "sql"
    ),
    SystemSpec(
        "chancheng_birth_db",
        "chancheng_birth_api",
        "chancheng_birth_certificates",
        _birth_records(),
        "rest",
    ),
    SystemSpec("gd_business_db", "gd_business_drop", "gd_business_registry", _enterprises(), "csv"),
    SystemSpec(
        "nanhai_realestate_db",
        "nanhai_realestate_drop",
        "nanhai_real_estate",
        _property_rights(),
        "xlsx",
    ),
)


def spec_for(key: str) -> SystemSpec:
    """The system with this store id, connection id or source id (``KeyError`` otherwise)."""
    for spec in SYSTEM_SPECS:
        if key in (spec.store_id, spec.conn_id, spec.source_id):
            return spec
    raise KeyError(f"no demo department system {key!r}")
