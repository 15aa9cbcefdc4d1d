"""Calendar dates as department systems deliver them: ``date``, ``datetime`` or text in ISO 8601,
``YYYYMMDD`` or ``YYYY/MM/DD`` form."""

from __future__ import annotations

import datetime as dt

__all__ = ["add_years", "to_date"]

CHINA = dt.timezone(dt.timedelta(hours=8), "CST")
_TEXT_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y.%m.%d")


def to_date(value: object) -> dt.date | None:
    """The date in ``value``; ``None`` if empty; ``ValueError`` saying why it is not a date."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:  # a timestamptz: the calendar date in China (UTC+8)
            value = value.astimezone(CHINA)
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        head = text[:10] if len(text) > 10 and text[10] in "T " else text
        for fmt in _TEXT_FORMATS:
            try:
                return dt.datetime.strptime(head, fmt).date()
            except ValueError:
                continue
        raise ValueError(f"not a date: {text[:32]!r}")
    raise ValueError(f"not a date: a value of type {type(value).__name__}")


def add_years(day: dt.date, years: int) -> dt.date:
    """``day`` plus whole years; 29 February becomes 28 February in a common year."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)
