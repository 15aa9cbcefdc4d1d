"""Electronic license identifiers (GB/T 36901-36906 as provincial platforms use them).

``1.2.156.3005.2.{type code}.{issuer code}.{sequence}.{version}.{check}`` where the check
character is ISO 7064 MOD 37,36 (``stdnum.iso7064.mod_37_36``) over everything after the prefix
with the dots removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum.iso7064 import mod_37_36

__all__ = ["LICENSE_ID_PREFIX", "LicenseIdentifier", "format_license_id", "parse_license_id"]

LICENSE_ID_PREFIX = "1.2.156.3005.2"
_PART = re.compile(r"^[0-9A-Z]+$")
_VERSION = re.compile(r"^[0-9]{3}$")


@dataclass(frozen=True)
class LicenseIdentifier:
    """The parts of a license identifier; ``str()`` gives the full identifier with its check."""

    type_code: str
    issuer_code: str
    sequence: str
    version: int

    def __post_init__(self) -> None:
        for name in ("type_code", "issuer_code", "sequence"):
            part = getattr(self, name)
            if not _PART.match(part):
                raise ValueError(f"license identifier {name} must be 0-9A-Z, got {part!r}")
        if not 1 <= self.version <= 999:
            raise ValueError(f"license version must be 1..999, got {self.version}")

    @property
    def version_text(self) -> str:
        return f"{self.version:03d}"

    @property
    def check(self) -> str:
        body = f"{self.type_code}{self.issuer_code}{self.sequence}{self.version_text}"
        return mod_37_36.calc_check_digit(body)

    @property
    def base(self) -> str:
        """The identifier without version and check: the same for every version of a license."""
        return f"{LICENSE_ID_PREFIX}.{self.type_code}.{self.issuer_code}.{self.sequence}"

    def __str__(self) -> str:
        return f"{self.base}.{self.version_text}.{self.check}"

    def with_version(self, version: int) -> LicenseIdentifier:
        return LicenseIdentifier(self.type_code, self.issuer_code, self.sequence, version)


def format_license_id(type_code: str, issuer_code: str, sequence: str, version: int) -> str:
    """Build the full identifier, check character included."""
    return str(LicenseIdentifier(type_code, issuer_code, sequence, version))


def parse_license_id(text: str) -> LicenseIdentifier:
    """Parse and check an identifier; ``ValueError`` says which part is wrong."""
    value = (text or "").strip().upper()
    if not value.startswith(LICENSE_ID_PREFIX + "."):
        raise ValueError(f"license identifier must start with {LICENSE_ID_PREFIX}.")
    parts = value[len(LICENSE_ID_PREFIX) + 1 :].split(".")
    if len(parts) != 5:
        raise ValueError(
            "license identifier must have five parts after the prefix "
            f"(type.issuer.sequence.version.check), got {len(parts)}"
        )
    type_code, issuer_code, sequence, version, check = parts
    if not _VERSION.match(version):
        raise ValueError(f"license identifier version must be three digits, got {version!r}")
    ident = LicenseIdentifier(type_code, issuer_code, sequence, int(version))
    if ident.check != check:
        raise ValueError("license identifier has a bad check character")
    return ident
