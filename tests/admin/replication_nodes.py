"""Real stores that replicate, for the tests of the replication lag (the dashboard card and
``/metrics``): a county store whose packages the city applied, and the city's own backlog.

:func:`city_with_backlog` leaves the city store with the county ``440604``'s three packages
applied (five license versions) and three packages of its own planned for the province
``440000``, the first delivered: two packages (three versions) wait.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from stdnum.cn import ric

from license_store import LicenseRecord, LicenseStore
from license_store.models import exchange_outbox
from license_store.replication import apply_package, mark_delivered, package_rows, plan_packages

COUNTY, CITY, PROVINCE = "440604", "440600", "440000"
RECORDS = 5
HOUSEHOLD_TYPE = "11440000MB2000000Q001"
PUBLIC_SECURITY = "11440604MB2C00012P"


def resident_id(n: int) -> str:
    """A valid resident ID number of a Chancheng resident born in 2003."""
    first17 = f"{COUNTY}20030701{n + 1:03d}"
    return first17 + ric.calc_check_digit(first17 + "0")


def record(n: int) -> LicenseRecord:
    """A household-register license of the ``n``-th resident."""
    return LicenseRecord(
        type_code=HOUSEHOLD_TYPE,
        type_name="居民户口簿",
        issuer_code=PUBLIC_SECURITY,
        issuer_name="佛山市公安局禅城分局",
        region_code=COUNTY,
        holder_id=resident_id(n),
        holder_kind="natural",
        holder_name=f"测试{n}",
        number=f"HK{n:08d}",
        issue_date=dt.date(2024, 3, 1),
        valid_from=dt.date(2024, 3, 1),
        valid_to=None,
        status="valid",
        face={"address": f"广东省佛山市禅城区祖庙路{n}号"},
        source_id="fs_household",
        run_id="run-1",
    )


def apply_child_packages(child: LicenseStore, parent: LicenseStore, sender: str) -> int:
    """Plan the child's new versions in packages of two, apply them at the parent, acknowledge
    them; the last package's number."""
    entries = plan_packages(child, CITY, max_rows=2)
    for entry in entries:
        apply_package(parent, sender, entry.seq, package_rows(child, entry))
        mark_delivered(child, entry.seq)
    return entries[-1].seq


def city_with_backlog(county: LicenseStore, city: LicenseStore) -> dict[str, Any]:
    """Replicate the county into the city, then plan the city's packages for the province and
    deliver the first; what the city's backlog and inbox should read."""
    county.upsert([record(n) for n in range(RECORDS)])
    last = apply_child_packages(county, city, COUNTY)
    entries = plan_packages(city, PROVINCE, max_rows=2)
    mark_delivered(city, entries[0].seq)
    return {
        "child_last_seq": last,
        "waiting": len(entries) - 1,
        "waiting_rows": sum(e.rows for e in entries[1:]),
        "holder_ids": [resident_id(n) for n in range(RECORDS)],
    }


def backdate_outbox(store: LicenseStore, by: dt.timedelta) -> None:
    """Move every planned package's creation time ``by`` into the past (a parent long down)."""
    with store._engine.begin() as conn:
        for row in conn.execute(sa.select(exchange_outbox.c.seq, exchange_outbox.c.created_at)):
            conn.execute(
                exchange_outbox.update()
                .where(exchange_outbox.c.seq == row.seq)
                .values(created_at=row.created_at - by)
            )
