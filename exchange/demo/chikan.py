"""赤坎区's birth records for the five-node network: a health bureau that drops GB18030 CSV files.

The sample deployment names the Chikan health bureau (``chikan_health``, region 440802) but gives
it no source. The five-node network (:mod:`exchange.network`) adds one in the Chikan node's copy
of the configuration, :data:`CHIKAN_SOURCE_CONFIG`: a ``files`` source over a drop folder, each
row one birth with its 出生医学证明 (for the mother, and the father when named) and the newborn's
disease screening report (新生儿疾病筛查报告, for the mother). The screening report is a license
type the network's catalogue marks ``not_shared`` (:data:`SCREENING_TYPE_CONFIG`): medical data
that never leaves the node that holds it.

:func:`chikan_birth_rows` makes the rows (synthetic people born in 湛江, seeded: the same
arguments give the same rows), :func:`write_chikan_drop` drops them as one CSV file the way the
other file-drop departments deliver (:func:`exchange.demo.deliveries.write_drop`).
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Date, DateTime, Integer, MetaData, String, Table

from exchange.demo.deliveries import write_drop
from exchange.demo.departments import birth_cert_no
from exchange.demo.people import given_name, region_code_valid, resident_id, surname
from exchange.demo.schema import SystemSpec

__all__ = [
    "BIRTH_MATERIAL_MATTER",
    "CHIKAN_DATASET_CONFIG",
    "CHIKAN_SOURCE",
    "CHIKAN_SOURCE_CONFIG",
    "CHIKAN_SPEC",
    "SCREENING_TYPE",
    "SCREENING_TYPE_CONFIG",
    "chikan_birth_rows",
    "write_chikan_drop",
]

CHIKAN_REGION = "440802"
CHIKAN_SOURCE = "chikan_birth_certificates"
SCREENING_TYPE = "newborn_screening"
FATHER_REGIONS = ("440802", "440803", "440882")  # 赤坎区, 霞山区, 雷州市
HOSPITALS = ("湛江中心人民医院", "湛江市妇幼保健院", "湛江市赤坎区人民医院")
SCREENING_ITEMS = "苯丙酮尿症、先天性甲状腺功能减低症、葡萄糖-6-磷酸脱氢酶缺乏症"


def _birth_table() -> Table:
    return Table(
        "chikan_birth_records",
        MetaData(),
        Column("record_id", Integer, primary_key=True, autoincrement=False),
        Column("cert_no", String(16), nullable=False),
        Column("baby_name", String(32), nullable=False),
        Column("baby_gender", String(2), nullable=False),
        Column("birth_date", Date, nullable=False),
        Column("birth_place", String(64), nullable=False),
        Column("mother_id", String(18), nullable=False),
        Column("mother_name", String(32), nullable=False),
        Column("father_id", String(18)),
        Column("father_name", String(32)),
        Column("issue_date", Date, nullable=False),
        Column("screening_no", String(20), nullable=False),
        Column("screened_on", Date, nullable=False),
        Column("screening_result", String(32), nullable=False),
        Column("updated_at", DateTime, nullable=False),
        comment="赤坎区出生医学证明与新生儿疾病筛查 (synthetic demo data)",
    )


CHIKAN_SPEC = SystemSpec(
    "chikan_birth_db", "chikan_birth_drop", CHIKAN_SOURCE, _birth_table(), "csv"
)
"""The Chikan bureau's export: the columns of its CSV drops and the connection that reads them."""

_BIRTH_FACE = {
    "baby_name": "baby_name",
    "baby_gender": "baby_gender",
    "birth_date": "birth_date",
    "birth_place": "birth_place",
    "father_name": "father_name",
    "mother_name": "mother_name",
}

CHIKAN_SOURCE_CONFIG: dict[str, Any] = {
    "id": CHIKAN_SOURCE,
    "name": "赤坎区出生医学证明管理系统",
    "department": "chikan_health",
    "connector": {
        "kind": "files",
        "options": {
            "pattern": "*.csv",
            "format": "csv",
            "batch_size": 5000,
            "columns": ["record_id", "cert_no", "mother_id", "mother_name", "issue_date"],
        },
    },
    "connection": CHIKAN_SPEC.conn_id,
    "dataset": "chikan_birth_certificates",
    "primary_key": ["record_id"],
    "schedule": "@daily",
    "licenses": [
        {
            "type": "birth_medical_certificate",
            "holder_id": "mother_id",
            "holder_name": "mother_name",
            "number": "cert_no",
            "issue_date": "issue_date",
            "face": _BIRTH_FACE,
        },
        {
            "type": "birth_medical_certificate",
            "holder_id": "father_id",
            "holder_name": "father_name",
            "number": "cert_no",
            "issue_date": "issue_date",
            "optional": True,
            "face": _BIRTH_FACE,
        },
        {
            "type": SCREENING_TYPE,
            "holder_id": "mother_id",
            "holder_name": "mother_name",
            "number": "screening_no",
            "issue_date": "screened_on",
            "face": {
                "baby_name": "baby_name",
                "screened_on": "screened_on",
                "result": "screening_result",
            },
        },
    ],
}
"""The ``sources.yaml`` entry of the Chikan bureau (in the Chikan node's configuration only)."""

CHIKAN_DATASET_CONFIG: dict[str, Any] = {
    "id": "chikan_birth_certificates",
    "name": "赤坎区出生医学证明信息",
    "department": "chikan_health",
    "sharing": "conditional",
    "update_frequency": "daily",
}
"""The ``datasets.yaml`` entry of the Chikan bureau's dataset."""

SCREENING_TYPE_CONFIG: dict[str, Any] = {
    "id": SCREENING_TYPE,
    "code": "11440802MB2025096E001",
    "name": "新生儿疾病筛查报告",
    "holder_kind": "natural",
    "issuing_department": "chikan_health",
    "validity": "permanent",
    "sharing": "not_shared",
    "face_fields": [
        {"name": "baby_name", "label": "新生儿姓名"},
        {"name": "screened_on", "label": "筛查日期"},
        {"name": "result", "label": "筛查结果"},
    ],
}
"""The ``license_types.yaml`` entry of the screening report: never shared with another node, and
at its own node only with the Chikan health bureau's own clients (``license_store.access``)."""

BIRTH_MATERIAL_MATTER: dict[str, Any] = {
    "code": "11440802MB2025096E-JKDA-001",
    "name": "新生儿健康档案建档",
    "department": "chikan_health",
    "materials": [
        {"name": "出生医学证明", "license_type": "birth_medical_certificate"},
        {"name": "新生儿疾病筛查报告", "license_type": SCREENING_TYPE},
    ],
}
"""A ``matters.yaml`` entry listing the birth certificate and the (not shared) screening report."""


def _person_id(
    rng: random.Random, regions: tuple[str, ...], years: tuple[int, int], female: bool
) -> str:
    """A resident ID born in one of ``regions`` in ``years``, the region valid in that year
    (雷州市 440882 exists since 1994)."""
    while True:
        region, year = rng.choice(regions), rng.randint(*years)
        if region_code_valid(region, year):
            break
    birth = dt.date(year, rng.randint(1, 12), rng.randint(1, 28))
    sequence = rng.randrange(0, 500) * 2 + (0 if female else 1)  # the last digit: the gender
    return resident_id(region, birth, sequence)


def chikan_birth_rows(
    count: int, *, seed: int = 6, first_id: int = 1, year: int = 2024
) -> list[dict[str, Any]]:
    """``count`` births at Chikan hospitals in ``year``, record ids from ``first_id``.

    Mothers are born in 赤坎区 (their ID numbers start ``440802``), fathers in 湛江 (one in
    twelve records names none). Every mother and certificate number is distinct within one call;
    the same arguments give the same rows.
    """
    rng = random.Random(f"chikan-{seed}-{first_id}")
    taken_ids: set[str] = set()
    taken_numbers: set[str] = set()
    rows = []
    for record_id in range(first_id, first_id + count):
        mother_id = _person_id(rng, (CHIKAN_REGION,), (1986, 2000), female=True)
        while mother_id in taken_ids:
            mother_id = _person_id(rng, (CHIKAN_REGION,), (1986, 2000), female=True)
        taken_ids.add(mother_id)
        mother_name = surname(rng) + given_name(rng, "女", int(mother_id[6:10]))
        has_father = rng.random() >= 1 / 12
        father_id = (
            _person_id(rng, FATHER_REGIONS, (1984, 1998), female=False) if has_father else None
        )
        father_name = surname(rng) + given_name(rng, "男", 1990) if has_father else None
        gender = rng.choice(("男", "女"))
        family_name = (father_name or mother_name)[0]
        birth = dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(0, 350))
        issued = birth + dt.timedelta(days=rng.randint(1, 14))
        screened = birth + dt.timedelta(days=rng.randint(3, 7))
        rows.append(
            {
                "record_id": record_id,
                "cert_no": birth_cert_no(rng, issued.year, taken_numbers),
                "baby_name": family_name + given_name(rng, gender, year),
                "baby_gender": gender,
                "birth_date": birth,
                "birth_place": rng.choice(HOSPITALS),
                "mother_id": mother_id,
                "mother_name": mother_name,
                "father_id": father_id,
                "father_name": father_name,
                "issue_date": issued,
                "screening_no": f"ZJXS{year}{record_id:07d}",
                "screened_on": screened,
                "screening_result": "未见异常" if rng.random() < 0.97 else "建议复查",
                "updated_at": dt.datetime.combine(issued, dt.time(9, 30)),
            }
        )
    return rows


def write_chikan_drop(folder: Path, rows: list[dict[str, Any]], label: str) -> Path:
    """Drop ``rows`` into ``folder`` as one GB18030 CSV file ``chikan_birth_records_<label>``."""
    return write_drop(CHIKAN_SPEC, folder, rows, label)
