"""GB/T 2260 region codes: six digits ``PPCCDD``; level and parent chain follow from the code."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Region",
    "RegionLevel",
    "ancestor_codes",
    "parent_code",
    "region_level",
    "validate_region_code",
]


class RegionLevel(enum.StrEnum):
    """The three levels of the shared exchange."""

    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"


def validate_region_code(code: object) -> str:
    """Return the code as a six-digit string or raise ``ValueError`` saying why it is not one."""
    text = str(code).strip() if code is not None else ""
    if len(text) != 6 or not text.isdigit():
        raise ValueError(f"region code must be six digits (GB/T 2260), got {text!r}")
    if text[:2] == "00":
        raise ValueError(f"region code {text!r} has no province part")
    if text[2:4] == "00" and text[4:] != "00":
        raise ValueError(f"region code {text!r} names a county without a city")
    return text


def region_level(code: str) -> RegionLevel:
    """``PP0000`` is a province, ``PPCC00`` a city, anything else county-level."""
    code = validate_region_code(code)
    if code[2:] == "0000":
        return RegionLevel.PROVINCE
    if code[4:] == "00":
        return RegionLevel.CITY
    return RegionLevel.COUNTY


def parent_code(code: str) -> str | None:
    """The code of the region one level up, or ``None`` for a province."""
    level = region_level(code)
    if level is RegionLevel.PROVINCE:
        return None
    if level is RegionLevel.CITY:
        return code[:2] + "0000"
    return code[:4] + "00"


def ancestor_codes(code: str) -> list[str]:
    """Codes from the region's parent up to its province (none for a province)."""
    chain: list[str] = []
    parent = parent_code(code)
    while parent is not None:
        chain.append(parent)
        parent = parent_code(parent)
    return chain


@dataclass(frozen=True)
class Region:
    """A named region of the deployment."""

    code: str
    name: str

    @property
    def level(self) -> RegionLevel:
        return region_level(self.code)

    @property
    def parent(self) -> str | None:
        return parent_code(self.code)

    def ancestors(self) -> list[str]:
        """Codes from this region's parent up to its province."""
        return ancestor_codes(self.code)
