"""GB/T 2260 region levels and the electronic license identifier with its MOD 37,36 check."""

from __future__ import annotations

import pytest

from exchange.standards import (
    LicenseIdentifier,
    RegionLevel,
    format_license_id,
    parent_code,
    parse_license_id,
    region_level,
)
from exchange.standards.regions import Region, validate_region_code

SAMPLE = "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U"


@pytest.mark.parametrize(
    ("code", "level", "parent"),
    [
        ("440000", RegionLevel.PROVINCE, None),
        ("440600", RegionLevel.CITY, "440000"),
        ("440604", RegionLevel.COUNTY, "440600"),
        ("440882", RegionLevel.COUNTY, "440800"),
    ],
)
def test_levels_and_parents(code: str, level: RegionLevel, parent: str | None) -> None:
    assert region_level(code) is level
    assert parent_code(code) == parent


def test_ancestor_chain() -> None:
    assert Region("440802", "赤坎区").ancestors() == ["440800", "440000"]


@pytest.mark.parametrize("bad", ["44060", "4406040", "44060a", "000000", "440012", ""])
def test_bad_region_codes(bad: str) -> None:
    with pytest.raises(ValueError, match="region code"):
        validate_region_code(bad)


def test_published_sample_identifier_round_trips() -> None:
    ident = parse_license_id(SAMPLE)
    assert ident == LicenseIdentifier(
        "11100000000013338W011", "11430000006122244L", "20230000403", 1
    )
    assert ident.check == "U"
    assert str(ident) == SAMPLE


def test_format_computes_the_check() -> None:
    assert (
        format_license_id("11100000000013338W011", "11430000006122244L", "20230000403", 1) == SAMPLE
    )


def test_new_version_changes_version_and_check() -> None:
    ident = parse_license_id(SAMPLE)
    second = ident.with_version(2)
    assert str(second).split(".")[-2] == "002"
    assert parse_license_id(str(second)) == second
    assert second.base == ident.base


@pytest.mark.parametrize("position", range(len("1.2.156.3005.2."), len(SAMPLE) - 2))
def test_any_changed_character_is_caught(position: int) -> None:
    char = SAMPLE[position]
    if char == ".":
        return
    replacement = "7" if char != "7" else "8"
    broken = SAMPLE[:position] + replacement + SAMPLE[position + 1 :]
    with pytest.raises(ValueError):
        parse_license_id(broken)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("1.2.156.3005.1.A.B.C.001.X", "must start with"),
        ("1.2.156.3005.2.A.B.C.001", "five parts"),
        ("1.2.156.3005.2.A.B.C.1.X", "three digits"),
        ("1.2.156.3005.2.a-b.B.C.001.X", "0-9A-Z"),
    ],
)
def test_malformed_identifiers(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_license_id(bad)
