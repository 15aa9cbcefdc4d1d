"""The vectorised check columns agree with python-stdnum, value for value and reason for reason."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pytest
from stdnum.cn import ric, uscc

from exchange.standards.holder_ids import InvalidIdentifier, validate_ric, validate_uscc
from quality.checks import (
    RIC_PROBLEMS,
    USCC_PROBLEMS,
    dates,
    normalised_ids,
    ric_problems,
    uscc_problems,
)

REGIONS = ("110101", "440604", "440103", "440605", "999999", "440000")
ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def _mutations(rng: random.Random, number: str) -> list[str]:
    position = rng.randrange(len(number))
    return [
        number,
        number[:-1] + rng.choice("0123456789X"),  # maybe a wrong check character
        number[:position] + rng.choice("0123456789") + number[position + 1 :],
        number[:-1],  # too short
        number + "1",  # too long
        number[:5] + "A" + number[6:],  # bad format
        f" {number.lower()} ",  # spaces and case: normalised first
    ]


def resident_ids(rng: random.Random, count: int) -> list[str]:
    values = []
    for _ in range(count):
        year = rng.choice([rng.randint(1900, 2026), 2099])
        month, day = rng.randint(1, 13), rng.randint(1, 31)
        first17 = f"{rng.choice(REGIONS)}{year:04d}{month:02d}{day:02d}{rng.randint(0, 999):03d}"
        values += _mutations(rng, first17 + ric.calc_check_digit(first17 + "0"))
    return values


def credit_codes(rng: random.Random, count: int) -> list[str]:
    values = []
    for _ in range(count):
        prefix = "".join(rng.choices("0123456789", k=8)) + "".join(rng.choices(ALPHABET, k=9))
        values += _mutations(rng, prefix + uscc.calc_check_digit(prefix))
    values += ["91440604MA4UXXXXXI", "", None]  # I is not in the alphabet
    return values


def _stdnum_reason(validate, value: object) -> str | None:
    if value is None or not str(value).strip():
        return None
    try:
        validate(value)
    except InvalidIdentifier as exc:
        return exc.reason
    return None


def _vector_reasons(problems: pa.Array, ids: pa.Array, texts: dict[str, str]) -> list:
    return [
        None if code is None else texts[code].format(length=len(number))
        for code, number in zip(problems.to_pylist(), ids.to_pylist(), strict=True)
    ]


KINDS = {
    "resident_id": (resident_ids, ric_problems, validate_ric, RIC_PROBLEMS),
    "credit_code": (credit_codes, uscc_problems, validate_uscc, USCC_PROBLEMS),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_identifier_checks_match_stdnum(kind: str, seed: int) -> None:
    generate, problems, validate, texts = KINDS[kind]
    values = generate(random.Random(seed), 1500)
    ids = normalised_ids(pa.array(values))
    got = _vector_reasons(problems(ids), ids, texts)
    expected = [_stdnum_reason(validate, v) for v in values]
    assert got == expected
    assert sum(r is None for r in expected) > 500  # valid ones were tested too
    found = {r.split(" (")[0] for r in expected if r}
    assert found == {t.split(" (")[0] for t in texts.values()}  # and every problem


def test_dates_read_what_to_date_reads() -> None:
    values = pa.array(
        [
            "2021-03-01",
            "20210302",
            "2021/03/03",
            "2021.03.04",
            "2021-03-05T08:00:00",
            " ",
            None,
            "2021-02-30",
            "yesterday",
        ]
    )
    parsed, errors = dates(values)
    assert parsed.to_pylist() == [
        dt.date(2021, 3, 1),
        dt.date(2021, 3, 2),
        dt.date(2021, 3, 3),
        dt.date(2021, 3, 4),
        dt.date(2021, 3, 5),
        None,
        None,
        None,
        None,
    ]
    assert errors.to_pylist()[-2:] == ["not a date: '2021-02-30'", "not a date: 'yesterday'"]
    assert errors.to_pylist()[:-2] == [None] * 7


def test_a_timestamp_with_a_zone_gives_the_date_in_china() -> None:
    late_evening_utc = dt.datetime(2024, 3, 1, 17, 30, tzinfo=dt.UTC)
    parsed, _ = dates(pa.array([late_evening_utc], pa.timestamp("us", "UTC")))
    assert parsed.to_pylist() == [dt.date(2024, 3, 2)]
    naive, _ = dates(pa.array([dt.datetime(2024, 3, 1, 17, 30)]))
    assert naive.to_pylist() == [dt.date(2024, 3, 1)]
