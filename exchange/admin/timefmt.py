"""How the admin pages write instants and ages: China time (UTC+8), ages in words."""

from __future__ import annotations

import datetime as dt

__all__ = ["CHINA", "age_text", "local_time"]

CHINA = dt.timezone(dt.timedelta(hours=8), "CST")  # no daylight saving time in China


def local_time(value: dt.datetime | None) -> str:
    """``2026-11-28 18:30`` in China time, or ``—``."""
    if value is None:
        return "—"
    if value.tzinfo is None:  # the state database stores UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def age_text(seconds: float | None) -> str:
    """``3 分钟`` / ``5 小时`` / ``2 天``, or ``—`` when unknown."""
    if seconds is None:
        return "—"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{int(seconds)} 秒"
    if seconds < 3600:
        return f"{int(seconds // 60)} 分钟"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} 小时"
    return f"{seconds / 86400:.1f} 天"
