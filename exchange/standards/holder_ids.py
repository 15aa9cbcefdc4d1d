"""Holder identifiers: resident ID numbers (GB 11643) and unified social credit codes (GB 32100).

Check characters are computed by python-stdnum (``stdnum.cn.ric``, ``stdnum.cn.uscc``); this module
adds what a government platform needs on top: a reason a person can act on, the field that was
wrong, and an ID that is masked before it reaches any message or log line.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
from dataclasses import dataclass

from stdnum.cn import ric, uscc
from stdnum.exceptions import (
    InvalidChecksum,
    InvalidComponent,
    InvalidFormat,
    InvalidLength,
)

__all__ = [
    "HolderId",
    "HolderKind",
    "InvalidIdentifier",
    "mask_id",
    "mask_ids_in_text",
    "normalise_id",
    "parse_holder_id",
    "validate_ric",
    "validate_uscc",
]

ID_LENGTH = 18


class HolderKind(enum.StrEnum):
    """Who holds a license: a natural person (resident ID) or a legal person (credit code)."""

    NATURAL = "natural"
    LEGAL = "legal"

    @property
    def code_type(self) -> str:
        """The holder-code type used in license metadata: ``111`` resident ID, ``001`` USCC."""
        return "111" if self is HolderKind.NATURAL else "001"


class InvalidIdentifier(ValueError):
    """An identifier failed validation; the message names the field and masks the value."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.masked = mask_id(value)
        self.reason = reason
        super().__init__(f"{field}: {reason} ({self.masked})")


@dataclass(frozen=True)
class HolderId:
    """A validated, normalised holder identifier."""

    value: str
    kind: HolderKind

    @property
    def masked(self) -> str:
        """The identifier as it may appear in logs and messages."""
        return mask_id(self.value)

    def __str__(self) -> str:  # never print a raw ID by accident
        return self.masked

    def __repr__(self) -> str:
        return f"HolderId({self.masked!r}, {self.kind.value})"


def mask_id(value: object) -> str:
    """Mask an identifier for display: keep the first and last four characters.

    ``440604199001011234`` -> ``4406**********1234``. Short values are masked entirely so that
    nothing identifying leaks from a truncated ID.
    """
    text = "" if value is None else str(value)
    if len(text) <= 8:
        return "*" * len(text)
    return text[:4] + "*" * (len(text) - 8) + text[-4:]


def _normalise(value: object) -> str:
    if not isinstance(value, str):
        value = "" if value is None else str(value)
    return value.strip().upper().replace(" ", "").replace("-", "")


def normalise_id(value: object) -> str:
    """The canonical form of an identifier (trimmed, upper case) without validating it."""
    return _normalise(value)


_RIC_FORMAT = re.compile(r"^[0-9]{17}[0-9X]$")


@functools.lru_cache(maxsize=65536)  # ~3,000 counties x the birth years in use
def _region_in_use(region: str, year: int) -> bool:
    """Whether a GB/T 2260 county code was assigned in ``year`` (python-stdnum's table).

    The answer depends only on the code and the year, so it is cached: the table lookup is the
    slowest part of validating a resident ID.
    """
    try:
        ric.get_birth_place(f"{region}{year:04d}01010000")
    except (InvalidComponent, KeyError):  # stdnum raises KeyError for some unknown counties
        return False
    return True


def validate_ric(value: object, field: str = "holder_id", today: dt.date | None = None) -> str:
    """Return the normalised resident identity number or raise :class:`InvalidIdentifier`.

    Checks, in order: length, format, birth date (a real date, not in the future), check
    character (ISO 7064 MOD 11-2, computed by python-stdnum) and the region code in use in the
    birth year -- the same checks as ``stdnum.cn.ric.validate``, with a reason for each.
    """
    number = _normalise(value)
    if len(number) != ID_LENGTH:
        raise InvalidIdentifier(
            field, number, f"wrong length ({len(number)} characters, expected {ID_LENGTH})"
        )
    if not _RIC_FORMAT.match(number):
        raise InvalidIdentifier(field, number, "bad format (17 digits then a digit or X expected)")
    try:  # YYYYMMDD at positions 7-14, as stdnum.cn.ric.get_birth_date reads it
        birth = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidIdentifier(field, number, "bad birth date") from None
    if birth > (today or dt.date.today()):
        raise InvalidIdentifier(field, number, "bad birth date (in the future)")
    if ric.calc_check_digit(number) != number[-1]:
        raise InvalidIdentifier(field, number, "bad check character")
    if not _region_in_use(number[:6], birth.year):
        raise InvalidIdentifier(field, number, "region code unknown in the birth year (GB/T 2260)")
    return number


def validate_uscc(value: object, field: str = "holder_id") -> str:
    """Return the normalised unified social credit code or raise :class:`InvalidIdentifier`."""
    code = _normalise(value)
    try:
        return uscc.validate(code)
    except InvalidLength:
        raise InvalidIdentifier(
            field, code, f"wrong length ({len(code)} characters, expected {ID_LENGTH})"
        ) from None
    except InvalidFormat:
        raise InvalidIdentifier(
            field,
            code,
            "bad format (8 digits, then characters from 0-9A-HJ-NPQRTUWXY expected)",
        ) from None
    except InvalidChecksum:
        raise InvalidIdentifier(field, code, "bad check character") from None


def _looks_like_ric(number: str) -> bool:
    return number[:-1].isdigit() and (number[-1:].isdigit() or number[-1:] == "X")


def parse_holder_id(
    value: object, field: str = "holder_id", kind: HolderKind | None = None
) -> HolderId:
    """Validate a resident ID or a credit code and say which it is.

    With ``kind`` given the value must be of that kind. Without it, a value that passes as a
    resident ID is one; otherwise it must pass as a credit code. The error explains the failure
    of the kind the value most resembles.
    """
    if kind is HolderKind.NATURAL:
        return HolderId(validate_ric(value, field), HolderKind.NATURAL)
    if kind is HolderKind.LEGAL:
        return HolderId(validate_uscc(value, field), HolderKind.LEGAL)
    number = _normalise(value)
    try:
        return HolderId(validate_ric(number, field), HolderKind.NATURAL)
    except InvalidIdentifier as ric_error:
        try:
            return HolderId(validate_uscc(number, field), HolderKind.LEGAL)
        except InvalidIdentifier as uscc_error:
            if _looks_like_ric(number) or len(number) != ID_LENGTH:
                raise InvalidIdentifier(
                    field, number, f"not a resident ID or credit code: {ric_error.reason}"
                ) from None
            raise InvalidIdentifier(
                field, number, f"not a resident ID or credit code: {uscc_error.reason}"
            ) from None


_ID_IN_TEXT = re.compile(
    # an 18-character resident ID, also glued to a word before it ("ID110105...")
    r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9A-Za-z])"
    # a unified social credit code (or anything of its shape), as a token of its own
    r"|(?<![0-9A-Za-z])[0-9]{8}[0-9A-Za-z]{10}(?![0-9A-Za-z])"
    # a first-generation 15-digit resident ID
    r"|(?<![0-9])[0-9]{15}(?![0-9])"
)


def mask_ids_in_text(text: str) -> str:
    """Mask every resident ID (18 or 15 characters, any case) or credit code inside free text.

    The one masker for messages, errors and log lines; it errs on the side of masking.
    """
    return _ID_IN_TEXT.sub(lambda m: mask_id(m.group(0)), text)
