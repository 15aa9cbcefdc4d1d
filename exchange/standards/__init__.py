"""National standards the whole platform speaks: holder identifiers, region codes, license ids.

Everything here is pure (no I/O) so that every package -- connectors, the exchange, the
license store, the quality gate and the API -- validates identifiers the same way.
"""

from exchange.standards.dates import add_years, to_date
from exchange.standards.holder_ids import (
    HolderId,
    HolderKind,
    InvalidIdentifier,
    mask_id,
    mask_ids_in_text,
    parse_holder_id,
    validate_ric,
    validate_uscc,
)
from exchange.standards.license_ids import LicenseIdentifier, format_license_id, parse_license_id
from exchange.standards.regions import Region, RegionLevel, parent_code, region_level

__all__ = [
    "HolderId",
    "HolderKind",
    "InvalidIdentifier",
    "LicenseIdentifier",
    "Region",
    "RegionLevel",
    "add_years",
    "format_license_id",
    "mask_id",
    "mask_ids_in_text",
    "parent_code",
    "parse_holder_id",
    "parse_license_id",
    "region_level",
    "to_date",
    "validate_ric",
    "validate_uscc",
]
