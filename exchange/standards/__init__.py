"""National standards the whole platform speaks: holder identifiers, region codes, license ids.

Everything here is pure (no I/O) so that every package -- connectors, the exchange, the
license store, the quality gate and the API -- validates identifiers the same way.
"""

from exchange.standards.holder_ids import (
    HolderId,
    HolderKind,
    InvalidIdentifier,
    mask_id,
    parse_holder_id,
    validate_ric,
    validate_uscc,
)
from exchange.standards.license_ids import LicenseIdentifier, format_license_id, parse_license_id
from exchange.standards.regions import Region, RegionLevel, region_level, parent_code

__all__ = [
    "HolderId",
    "HolderKind",
    "InvalidIdentifier",
    "LicenseIdentifier",
    "Region",
    "RegionLevel",
    "format_license_id",
    "mask_id",
    "parent_code",
    "parse_holder_id",
    "parse_license_id",
    "region_level",
    "validate_ric",
    "validate_uscc",
]
