"""Computed check columns: what the gate's expectations look at, computed a whole column at a time.

Great Expectations 1.x validates columns with its built-in expectations; rules it has no
expectation for (check characters of resident IDs and credit codes, dates written as text) are
computed here as columns of the batch -- a problem code, a parsed date -- that a built-in
expectation then checks (``expect_column_values_to_be_null``, a pair comparison). Everything is
vectorised with pyarrow and numpy: no Python loop runs per row, except for values pyarrow cannot
parse as a date, which :func:`exchange.standards.dates.to_date` decides one by one.

The check characters follow GB 11643 (ISO 7064 MOD 11-2) and GB 32100 (MOD 31) exactly as
python-stdnum computes them; ``tests/quality/test_checks.py`` compares both with python-stdnum
on generated and corrupted numbers.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.standards.dates import to_date
from exchange.standards.holder_ids import _region_in_use

__all__ = [
    "RIC_PROBLEMS",
    "USCC_PROBLEMS",
    "blank",
    "dates",
    "normalised_ids",
    "ric_birth_dates",
    "ric_problems",
    "trimmed_text",
    "uscc_problems",
]

ID_LENGTH = 18
RIC_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)
RIC_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)  # by the weighted sum mod 11
USCC_ALPHABET = b"0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = np.array(
    [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64
)
_USCC_VALUE = np.full(256, -1, dtype=np.int64)
_USCC_VALUE[np.frombuffer(USCC_ALPHABET, dtype=np.uint8)] = np.arange(len(USCC_ALPHABET))

RIC_PROBLEMS = {
    "wrong_length": "wrong length ({length} characters, expected 18)",
    "bad_format": "bad format (17 digits then a digit or X expected)",
    "bad_birth_date": "bad birth date",
    "future_birth_date": "bad birth date (in the future)",
    "bad_check_character": "bad check character",
    "unknown_region": "region code unknown in the birth year (GB/T 2260)",
}
"""Problem code -> the reason :func:`exchange.standards.holder_ids.validate_ric` gives."""

USCC_PROBLEMS = {
    "wrong_length": "wrong length ({length} characters, expected 18)",
    "bad_format": "bad format (8 digits, then characters from 0-9A-HJ-NPQRTUWXY expected)",
    "bad_check_character": "bad check character",
}
"""Problem code -> the reason :func:`exchange.standards.holder_ids.validate_uscc` gives."""


def _as_text(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.string())
    return pc.cast(values, pa.string())


def trimmed_text(values: pa.Array) -> pa.Array:
    """The values as trimmed text (nulls stay null)."""
    return pc.utf8_trim_whitespace(_as_text(values))


def blank(values: pa.Array) -> pa.Array:
    """Whether each value is missing: null, or text that is empty once trimmed."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return pc.is_null(values)
    return pc.fill_null(pc.equal(pc.utf8_length(trimmed_text(values)), 0), True)


def normalised_ids(values: pa.Array) -> pa.Array:
    """Identifiers in canonical form: trimmed, upper case, without spaces or hyphens."""
    text = pc.utf8_upper(trimmed_text(values))
    return pc.replace_substring(pc.replace_substring(text, " ", ""), "-", "")


def _fixed_width(values: pa.Array, rows: np.ndarray) -> np.ndarray:
    """The bytes of the given rows of an 18-character ASCII string array, as an (n, 18) array."""
    picked = pc.take(values, pa.array(rows, type=pa.int64()))
    picked = picked.combine_chunks() if isinstance(picked, pa.ChunkedArray) else picked
    if pa.types.is_large_string(picked.type):
        picked = pc.cast(picked, pa.string())
    picked = pc.fill_null(picked, "0" * ID_LENGTH)
    if len(picked) == 0:
        return np.zeros((0, ID_LENGTH), dtype=np.uint8)
    offsets = np.frombuffer(picked.buffers()[1], dtype=np.int32)
    offsets = offsets[picked.offset : picked.offset + len(picked) + 1]
    data = np.frombuffer(picked.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(-1, ID_LENGTH)


def _codes(size: int, problems: list[tuple[np.ndarray, str]]) -> pa.Array:
    """A string column holding, per row, the first problem found (null: none)."""
    index = np.full(size, -1, dtype=np.int8)
    for number, (mask, _) in reversed(list(enumerate(problems))):  # the first problem wins
        index[mask] = number
    names = pa.array([code for _, code in problems], type=pa.string())
    return pc.take(names, pa.array(index, mask=index < 0))


def _bool(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _strict_dates(text: pa.Array, fmt: str) -> pa.Array:
    """``text`` parsed with ``fmt``; null unless it is a real calendar date written that way.

    pyarrow's ``strptime`` rolls 30 February over into March; formatting such a date back and
    comparing it with the text refuses it.
    """
    stamps = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    # a rolled-over date lands on day 1, 2 or 3 of the next month: only those are formatted back
    doubtful = pc.if_else(pc.less_equal(pc.day(stamps), 3), stamps, pa.scalar(None, stamps.type))
    rolled = pc.fill_null(pc.not_equal(pc.strftime(doubtful, format=fmt), text), False)
    return pc.cast(pc.if_else(rolled, pa.scalar(None, stamps.type), stamps), pa.date32())


def ric_birth_dates(ids: pa.Array) -> pa.Array:
    """The birth date inside each normalised resident ID (null where it is not a date)."""
    return _strict_dates(pc.utf8_slice_codeunits(ids, 6, 14), "%Y%m%d")


def ric_problems(ids: pa.Array, today: dt.date | None = None) -> pa.Array:
    """Per normalised resident ID: null if valid or blank, else the first problem code.

    The checks and their order are :func:`exchange.standards.holder_ids.validate_ric`'s: length,
    format, birth date (a real date, not in the future), check character, region code in use in
    the birth year (python-stdnum's GB/T 2260 table, looked up once per region and year).
    """
    size = len(ids)
    given = ~_bool(pc.is_null(ids)) & ~_bool(pc.equal(pc.utf8_length(ids), 0))
    wrong_length = given & ~_bool(pc.equal(pc.utf8_length(ids), ID_LENGTH))
    shaped = given & ~wrong_length
    bad_format = shaped & ~_bool(pc.match_substring_regex(ids, r"^[0-9]{17}[0-9X]$"))
    formed = shaped & ~bad_format
    births = ric_birth_dates(ids)
    bad_birth = formed & _bool(pc.is_null(births))
    limit = pa.scalar(today or dt.date.today(), pa.date32())
    future = formed & ~bad_birth & _bool(pc.greater(births, limit))
    dated = formed & ~bad_birth & ~future
    rows = np.flatnonzero(dated)
    width = _fixed_width(ids, rows)
    total = ((width[:, :17].astype(np.int64) - 48) * RIC_WEIGHTS).sum(axis=1)
    bad_check = np.zeros(size, dtype=bool)
    bad_check[rows] = RIC_CHECK[total % 11] != width[:, 17]
    checked = dated & ~bad_check
    places = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(ids, 0, 6), pc.utf8_slice_codeunits(ids, 6, 10), ""
    )
    candidates = pc.filter(places, pa.array(checked))
    known = [
        place
        for place in pc.unique(candidates).to_pylist()
        if _region_in_use(place[:6], int(place[6:]))
    ]
    unknown = checked & ~_bool(pc.is_in(places, value_set=pa.array(known, pa.string())))
    return _codes(
        size,
        [
            (wrong_length, "wrong_length"),
            (bad_format, "bad_format"),
            (bad_birth, "bad_birth_date"),
            (future, "future_birth_date"),
            (bad_check, "bad_check_character"),
            (unknown, "unknown_region"),
        ],
    )


def uscc_problems(codes: pa.Array) -> pa.Array:
    """Per normalised credit code: null if valid or blank, else the first problem code.

    python-stdnum's ``stdnum.cn.uscc.validate``: length 18, eight digits, then characters of
    the GB 32100 alphabet, and the MOD 31 check character.
    """
    size = len(codes)
    given = ~_bool(pc.is_null(codes)) & ~_bool(pc.equal(pc.utf8_length(codes), 0))
    wrong_length = given & ~_bool(pc.equal(pc.utf8_length(codes), ID_LENGTH))
    shaped = given & ~wrong_length
    bad_format = shaped & ~_bool(
        pc.match_substring_regex(codes, r"^[0-9]{8}[0-9ABCDEFGHJKLMNPQRTUWXY]{10}$")
    )
    rows = np.flatnonzero(shaped & ~bad_format)
    width = _fixed_width(codes, rows)
    values = _USCC_VALUE[width]
    total = (values[:, :17] * USCC_WEIGHTS).sum(axis=1)
    bad_check = np.zeros(size, dtype=bool)
    bad_check[rows] = (31 - total) % 31 != values[:, 17]
    return _codes(
        size,
        [
            (wrong_length, "wrong_length"),
            (bad_format, "bad_format"),
            (bad_check, "bad_check_character"),
        ],
    )


_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y.%m.%d")


def _text_dates(text: pa.Array) -> pa.Array:
    """Dates written as text, in the formats :func:`to_date` reads (null: not parsed)."""
    long = pc.fill_null(pc.greater(pc.utf8_length(text), 10), False)
    sep = pc.utf8_slice_codeunits(text, 10, 11)
    cut = pc.and_(long, pc.is_in(sep, value_set=pa.array(["T", " "])))
    head = pc.if_else(cut, pc.utf8_slice_codeunits(text, 0, 10), text)
    return pc.coalesce(*(_strict_dates(head, fmt) for fmt in _DATE_FORMATS))


def dates(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Each value as a date (China time for a timestamp with a zone) and, per row, why not.

    Returns ``(dates, errors)``: ``dates`` is null where the value is blank or not a date;
    ``errors`` is null except where a value is given but not a date, where it holds the reason
    (``not a date: '2021-02-30'``) as :func:`to_date` words it.
    """
    size = len(values)
    kind = values.type
    if pa.types.is_date(kind):
        return pc.cast(values, pa.date32()), pa.nulls(size, pa.string())
    if pa.types.is_timestamp(kind):
        local = pc.local_timestamp(pc.cast(values, pa.timestamp(kind.unit, "+08:00")))
        naive = local if kind.tz else values
        return pc.cast(naive, pa.date32()), pa.nulls(size, pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(size, pa.date32()), pa.nulls(size, pa.string())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = trimmed_text(values)
        parsed = _text_dates(text)
        doubtful = np.flatnonzero(_bool(pc.is_null(parsed)) & ~_bool(blank(text)))
    else:
        parsed = pa.nulls(size, pa.date32())
        doubtful = np.flatnonzero(~_bool(pc.is_null(values)))
    if not len(doubtful):
        return parsed, pa.nulls(size, pa.string())
    # the few values pyarrow could not parse: to_date decides, with its reason
    fixed: list[dt.date | None] = []
    errors = np.full(size, None, dtype=object)
    for row, value in zip(doubtful, pc.take(values, pa.array(doubtful)).to_pylist(), strict=True):
        try:
            fixed.append(to_date(value))
        except ValueError as exc:
            fixed.append(None)
            errors[row] = str(exc)
    mask = np.zeros(size, dtype=bool)
    mask[doubtful] = True
    parsed = pc.replace_with_mask(parsed, pa.array(mask), pa.array(fixed, pa.date32()))
    return parsed, pa.array(errors, pa.string())
