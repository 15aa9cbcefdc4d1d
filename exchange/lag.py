"""How far this node's replication to its parent lags, and when that earns a yellow or red card.

The rule lives here alone; ``govx exchange status``, ``GET /metrics`` and the admin dashboard's
replication card all call :func:`assess` on the outbox's :class:`~license_store.replication.Backlog`
(packages planned for the parent and not acknowledged by it yet):

- **red** when ``alert_packages`` or more packages wait, or the oldest has waited ``alert_age_s``
  or longer;
- **yellow** when ``warn_packages`` or more wait, or the oldest has waited ``warn_age_s`` or longer;
- **green** otherwise (also when nothing waits).

The limits (:class:`LagLimits`) default to yellow at 10 packages or 15 minutes and red at 100
packages or an hour. A node packages after each sync and pushes at once, so with its parent up a
package waits seconds; 15 minutes (one ``quality_monitor`` period) means the parent has not taken
anything for a while, an hour means the parent's cross-region lookups have missed this node's
changes for an hour of window service. Ten packages are ten syncs' worth of changes; a hundred
(up to 200,000 license versions, or one sync run, each) take long to drain once the parent is
back. Each limit can be set from the environment (:meth:`LagLimits.from_env`)::

    GOVX_REPLICATION_WARN_PACKAGES   GOVX_REPLICATION_WARN_AGE_S
    GOVX_REPLICATION_ALERT_PACKAGES  GOVX_REPLICATION_ALERT_AGE_S

Packages are whole numbers from 1, ages seconds above 0; a yellow limit may not be above its red
one. An unusable value raises :class:`LagLimitsError` naming the variable.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quality.cards import Card, format_duration

if TYPE_CHECKING:
    from license_store.replication import Backlog, InboxPosition
    from license_store.store import LicenseStore

__all__ = [
    "ALERT_AGE_ENV",
    "ALERT_PACKAGES_ENV",
    "WARN_AGE_ENV",
    "WARN_PACKAGES_ENV",
    "LagLimits",
    "LagLimitsError",
    "LagVerdict",
    "ReplicationLag",
    "assess",
    "replication_lag",
]

WARN_PACKAGES_ENV = "GOVX_REPLICATION_WARN_PACKAGES"
WARN_AGE_ENV = "GOVX_REPLICATION_WARN_AGE_S"
ALERT_PACKAGES_ENV = "GOVX_REPLICATION_ALERT_PACKAGES"
ALERT_AGE_ENV = "GOVX_REPLICATION_ALERT_AGE_S"


class LagLimitsError(ValueError):
    """A replication lag limit is unusable (retrying will not help); the message says which."""


@dataclass(frozen=True)
class LagLimits:
    """When the outbox's backlog turns the replication card yellow, and when red."""

    warn_packages: int = 10
    warn_age_s: float = 15 * 60.0
    alert_packages: int = 100
    alert_age_s: float = 60 * 60.0

    def __post_init__(self) -> None:
        for name in ("warn_packages", "alert_packages"):
            if getattr(self, name) < 1:
                raise LagLimitsError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warn_age_s", "alert_age_s"):
            if not getattr(self, name) > 0:
                raise LagLimitsError(f"{name} must be above 0 seconds, got {getattr(self, name)}")
        if self.warn_packages > self.alert_packages or self.warn_age_s > self.alert_age_s:
            raise LagLimitsError(f"a yellow limit is above its red one: {self}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LagLimits:
        """The defaults, overridden by the ``GOVX_REPLICATION_*`` variables that are set."""
        env = os.environ if environ is None else environ
        default = cls()
        warn_packages = _packages(env, WARN_PACKAGES_ENV, default.warn_packages)
        alert_packages = _packages(env, ALERT_PACKAGES_ENV, default.alert_packages)
        warn_age = _seconds(env, WARN_AGE_ENV, default.warn_age_s)
        alert_age = _seconds(env, ALERT_AGE_ENV, default.alert_age_s)
        for warn, alert, warn_name, alert_name in (
            (warn_packages, alert_packages, WARN_PACKAGES_ENV, ALERT_PACKAGES_ENV),
            (warn_age, alert_age, WARN_AGE_ENV, ALERT_AGE_ENV),
        ):
            if warn > alert:
                raise LagLimitsError(
                    f"{warn_name} ({warn:g}) is above {alert_name} ({alert:g}): the yellow limit "
                    "must not be above the red one (set both, or neither)"
                )
        return cls(warn_packages, warn_age, alert_packages, alert_age)

    def describe(self, level: Card) -> str:
        """``yellow from 10 packages or 15 min`` (``red from …`` for red)."""
        packages, age = (
            (self.alert_packages, self.alert_age_s)
            if level is Card.RED
            else (self.warn_packages, self.warn_age_s)
        )
        return f"{level.value} from {_count(packages, 'package')} or {format_duration(age)}"


def _setting(env: Mapping[str, str], name: str) -> str | None:
    text = env.get(name, "").strip()
    return text or None


def _packages(env: Mapping[str, str], name: str, default: int) -> int:
    text = _setting(env, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise LagLimitsError(f"{name} must be a whole number of packages, got {text!r}") from None
    if value < 1:
        raise LagLimitsError(f"{name} must be at least 1 package, got {text!r}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = _setting(env, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise LagLimitsError(f"{name} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise LagLimitsError(f"{name} must be a number of seconds above 0, got {text!r}")
    return value


@dataclass(frozen=True)
class LagVerdict:
    """The replication card: its colour and a sentence saying what waits."""

    level: Card  # a StrEnum: equal to "green", "yellow" or "red"
    summary: str

    @property
    def rank(self) -> int:
        """0 green, 1 yellow, 2 red (the ``govx_exchange_lag_level`` gauge)."""
        return self.level.rank


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def assess(backlog: Backlog, limits: LagLimits, now: dt.datetime | None = None) -> LagVerdict:
    """The card of ``backlog`` under ``limits``, with a summary such as "3 packages (1,204
    changes) waiting, the oldest for 17 min; yellow from 10 packages or 15 min"."""
    now = now or dt.datetime.now(dt.UTC)
    age = backlog.oldest_age_s(now)
    waited = age if age is not None else 0.0

    def reached(packages: int, age_s: float) -> bool:
        return backlog.packages > 0 and (backlog.packages >= packages or waited >= age_s)

    if reached(limits.alert_packages, limits.alert_age_s):
        level = Card.RED
    elif reached(limits.warn_packages, limits.warn_age_s):
        level = Card.YELLOW
    else:
        level = Card.GREEN
    if backlog.packages == 0:
        summary = "nothing waiting"
        if backlog.last_delivered_at is not None:
            since = (now - backlog.last_delivered_at).total_seconds()
            summary += f"; last delivery {format_duration(since)} ago"
    else:
        summary = (
            f"{_count(backlog.packages, 'package')} "
            f"({_count(backlog.rows, 'change')}) waiting, "
            f"the oldest for {format_duration(waited)}"
        )
    if level is not Card.GREEN:
        summary += f"; {limits.describe(level)}"
    return LagVerdict(level, summary)


@dataclass(frozen=True)
class ReplicationLag:
    """What the license store says about replication at ``read_at``: this node's outbox
    backlog and, per child node, the last package applied here."""

    backlog: Backlog
    inbox: tuple[InboxPosition, ...]
    read_at: dt.datetime

    def applied_age_s(self, position: InboxPosition) -> float | None:
        """Seconds since ``position``'s package was applied (None when not recorded)."""
        if position.applied_at is None:
            return None
        return max(0.0, (self.read_at - position.applied_at).total_seconds())


def replication_lag(store: LicenseStore, now: dt.datetime | None = None) -> ReplicationLag:
    """Read the outbox backlog and the inbox positions (three small queries).

    Raises the store's errors: :class:`~license_store.errors.SchemaNotCurrent` when its exchange
    tables are missing, :class:`~license_store.errors.StoreUnavailable` when it is down.
    """
    from license_store.replication import backlog, inbox_positions

    waiting = backlog(store)
    positions = tuple(inbox_positions(store))
    return ReplicationLag(waiting, positions, now or dt.datetime.now(dt.UTC))
