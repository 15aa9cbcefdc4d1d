"""Fixtures of the license store tests: real SQLite and PostgreSQL databases, record factories.

The ``db_url`` and ``store`` fixtures run a test once on SQLite and once on PostgreSQL (the
shared ``postgres_url`` fixture of ``tests/conftest.py``: a fresh database per test).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from stdnum.cn import ric, uscc

from exchange.standards import parse_holder_id
from license_store import LicenseRecord, LicenseStore

# County-level districts of Guangdong (GB/T 2260): Chancheng, Nanhai, Shunde (Foshan, since
# 2002/2003), Chikan, Xiashan (Zhanjiang), Yuexiu (Guangzhou).
GD_COUNTIES = ("440604", "440605", "440606", "440802", "440803", "440104")
FIRST_BIRTH_DATE = dt.date(2003, 7, 1)  # every county above exists from then on


def resident_id(n: int) -> str:
    """The ``n``-th valid resident identity number: distinct for every ``n`` >= 0."""
    region = GD_COUNTIES[n % len(GD_COUNTIES)]
    birth = FIRST_BIRTH_DATE + dt.timedelta(days=n // (len(GD_COUNTIES) * 999))
    sequence = (n // len(GD_COUNTIES)) % 999 + 1
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    # stdnum's calc_check_digit ignores the last character of what it is given
    return first17 + ric.calc_check_digit(first17 + "0")


def credit_code(body17: str) -> str:
    """A valid unified social credit code from its first 17 characters."""
    return body17 + uscc.calc_check_digit(body17)


HOUSEHOLD_TYPE = "11440000MB2000000Q001"  # 居民户口簿
MARRIAGE_TYPE = "11440000MB2000000Q002"  # 结婚证
BUSINESS_TYPE = "11440000MB2000000Q003"  # 营业执照
PUBLIC_SECURITY = credit_code("11440604MB2C00012")  # 佛山市公安局禅城分局
CIVIL_AFFAIRS = credit_code("11440604MB2C00020")  # 佛山市禅城区民政局
COMPANY = "91110000600037341L"


@dataclass(frozen=True)
class Samples:
    """Sample codes and identifiers, for tests (a fixture, so no test imports this module)."""

    household_type: str = HOUSEHOLD_TYPE
    marriage_type: str = MARRIAGE_TYPE
    business_type: str = BUSINESS_TYPE
    public_security: str = PUBLIC_SECURITY
    civil_affairs: str = CIVIL_AFFAIRS
    company: str = COMPANY

    @staticmethod
    def resident_id(n: int) -> str:
        return resident_id(n)


@pytest.fixture
def samples() -> Samples:
    return Samples()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'licenses.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """An empty database: SQLite in ``tmp_path``, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db_url: str) -> Iterator[LicenseStore]:
    """A migrated store on each backend."""
    with LicenseStore(db_url) as opened:
        opened.upgrade()
        yield opened


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[LicenseStore]:
    """A migrated store on SQLite only (for tests where the backend does not matter)."""
    with LicenseStore(sqlite_url) as opened:
        opened.upgrade()
        yield opened


MakeRecord = Callable[..., LicenseRecord]


@pytest.fixture
def make_record() -> MakeRecord:
    """``make_record(n, **overrides)``: a household-register record of the ``n``-th resident."""

    def make(n: int = 0, **overrides: Any) -> LicenseRecord:
        holder = overrides.pop("holder_id", None) or resident_id(n)
        values: dict[str, Any] = {
            "type_code": HOUSEHOLD_TYPE,
            "type_name": "居民户口簿",
            "issuer_code": PUBLIC_SECURITY,
            "issuer_name": "佛山市公安局禅城分局",
            "region_code": "440604",
            "holder_id": parse_holder_id(holder).value,
            "holder_kind": parse_holder_id(holder).kind.value,
            "holder_name": f"测试{n}",
            "number": f"HK{n:08d}",
            "issue_date": dt.date(2024, 3, 1),
            "valid_from": dt.date(2024, 3, 1),
            "valid_to": None,
            "status": "valid",
            "face": {"address": f"广东省佛山市禅城区祖庙路{n}号", "relation": "户主"},
            "source_id": "fs_household",
            "run_id": "run-1",
        }
        values.update(overrides)
        return LicenseRecord(**values)

    return make


STORE_TODAY = dt.date(2026, 11, 28)  # the date a signing_store evaluates validity on


@pytest.fixture(scope="session")
def deployment() -> Any:
    """The sample deployment (config/): which department signs which issuer's licenses."""
    from pathlib import Path

    from exchange.config import load_deployment

    return load_deployment(Path(__file__).resolve().parents[2] / "config")


@pytest.fixture
def keyring(tmp_path: Any) -> Any:
    """An empty key ring in ``tmp_path``: signing generates the departments' keys on first use."""
    from license_store.signing import KeyRing

    return KeyRing(tmp_path / "keys")


@pytest.fixture
def signing_store(db_url: str, keyring: Any, deployment: Any) -> Iterator[LicenseStore]:
    """A migrated store on each backend that signs with ``keyring``; today is ``STORE_TODAY``."""
    with LicenseStore(
        db_url, keyring=keyring, deployment=deployment, today=lambda: STORE_TODAY
    ) as opened:
        opened.upgrade()
        yield opened
