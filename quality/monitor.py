"""The quality monitor: evaluate every source's card, remember changes, alert each change once.

:func:`check` is what the ``quality_monitor`` DAG and ``govx quality check`` run:

1. :func:`quality.cards.evaluate` judges every source;
2. :func:`record_cards` stores each card in ``source_cards``; a card that differs from the stored
   one is a change (a source seen for the first time with a yellow or red card is one too; a
   first green card is only the baseline) and becomes *due* on every channel its department set
   up;
3. :func:`deliver_alerts` sends what is due and not yet delivered: the webhook and the e-mail are
   marked sent separately, so a channel that failed is retried on the next check (its masked
   error kept on the row) while the other is not sent twice. A newer change replaces an
   undelivered older one: the alert says where the card came from and where it is now.

Checks must not overlap (the DAG runs one at a time), or a change could be sent twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import sqlalchemy as sa

from exchange.config import Deployment
from exchange.db import begin_write
from exchange.standards import mask_ids_in_text
from exchange.state import ExchangeState
from quality.alerts import Alert, AlertFailed, send_email, send_webhook, smtp_url
from quality.cards import Card, SourceStatus, evaluate
from quality.history import source_cards

__all__ = [
    "CardChange",
    "CheckResult",
    "DeliveryReport",
    "check",
    "deliver_alerts",
    "record_cards",
    "run_check",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardChange:
    """A source's card moved (``previous`` is ``None`` the first time a source is judged)."""

    source_id: str
    previous: Card | None
    card: Card


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery round did: ``(source_id, channel)`` pairs and the failures' messages."""

    sent: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str, str], ...]


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _reasons(status: SourceStatus) -> list[str]:
    problems = status.problems or status.signals
    return [mask_ids_in_text(f"{s.kind}: {s.reason}") for s in problems]


def record_cards(
    state: ExchangeState, statuses: list[SourceStatus], now: dt.datetime
) -> list[CardChange]:
    """Store each source's card; the changes since the previous check."""
    changes: list[CardChange] = []
    with begin_write(state.engine) as conn:
        stored = {
            row.source_id: row
            for row in conn.execute(sa.select(source_cards.c.source_id, source_cards.c.card))
        }
        for status in statuses:
            reasons = _reasons(status)
            row = stored.get(status.source_id)
            if row is None:
                conn.execute(
                    source_cards.insert().values(
                        source_id=status.source_id,
                        card=status.card.value,
                        reasons=reasons,
                        changed_at=now,
                        checked_at=now,
                        alert_due=status.card is not Card.GREEN,
                    )
                )
                if status.card is not Card.GREEN:
                    changes.append(CardChange(status.source_id, None, status.card))
            elif row.card != status.card.value:
                conn.execute(
                    source_cards.update()
                    .where(source_cards.c.source_id == status.source_id)
                    .values(
                        card=status.card.value,
                        previous_card=row.card,
                        reasons=reasons,
                        changed_at=now,
                        checked_at=now,
                        alert_due=True,
                        webhook_sent_at=None,
                        email_sent_at=None,
                        alert_attempts=0,
                        alert_error=None,
                    )
                )
                changes.append(CardChange(status.source_id, Card(row.card), status.card))
            else:
                conn.execute(
                    source_cards.update()
                    .where(source_cards.c.source_id == status.source_id)
                    .values(checked_at=now)
                )
    return changes


def _alert(deployment: Deployment, row: sa.Row) -> Alert:
    source = deployment.source_by_id[row.source_id]
    department = deployment.department_by_id[source.department]
    return Alert(
        source_id=source.id,
        source_name=source.name,
        department=department.id,
        department_name=department.name,
        dataset=source.dataset,
        card=row.card,
        previous_card=row.previous_card,
        changed_at=_aware(row.changed_at),
        reasons=tuple(row.reasons or ()),
    )


def deliver_alerts(
    deployment: Deployment, state: ExchangeState, smtp: str | None = None
) -> DeliveryReport:
    """Send every due, undelivered card change on each channel its department set up."""
    smtp = smtp or smtp_url()
    with state.engine.connect() as conn:
        due = list(conn.execute(sa.select(source_cards).where(source_cards.c.alert_due)))
    sent: list[tuple[str, str]] = []
    failed: list[tuple[str, str, str]] = []
    for row in due:
        source = deployment.source_by_id.get(row.source_id)
        if source is None:  # a source removed from the configuration
            continue
        alerts = deployment.department_by_id[source.department].alerts
        alert = _alert(deployment, row)
        done: dict[str, dt.datetime] = {}
        errors: list[tuple[str, str]] = []
        if alerts.webhook and row.webhook_sent_at is None:
            try:
                send_webhook(alerts.webhook, alert)
                done["webhook_sent_at"] = dt.datetime.now(dt.UTC)
            except AlertFailed as exc:
                errors.append(("webhook", str(exc)))
        if alerts.email and row.email_sent_at is None:
            try:
                if smtp is None:
                    raise AlertFailed("e-mail: GOVX_SMTP_URL is not set")
                send_email(smtp, alerts.email, alert)
                done["email_sent_at"] = dt.datetime.now(dt.UTC)
            except AlertFailed as exc:
                errors.append(("email", str(exc)))
        if not done and not errors:
            continue
        sent += [(row.source_id, key.removesuffix("_sent_at")) for key in done]
        for channel, error in errors:
            log.warning("alert for %s not delivered (retried next check): %s", row.source_id, error)
            failed.append((row.source_id, channel, error))
        values: dict = {**done, "alert_error": "; ".join(e for _, e in errors) or None}
        if errors:
            values["alert_attempts"] = source_cards.c.alert_attempts + 1
        with begin_write(state.engine) as conn:
            conn.execute(
                source_cards.update()
                .where(
                    source_cards.c.source_id == row.source_id,
                    source_cards.c.changed_at == row.changed_at,  # not a newer change meanwhile
                )
                .values(**values)
            )
    return DeliveryReport(tuple(sent), tuple(failed))


@dataclass(frozen=True)
class CheckResult:
    """One check: every source's status, the card changes it found, the alerts it delivered."""

    statuses: list[SourceStatus]
    changes: list[CardChange]
    delivery: DeliveryReport


def run_check(
    deployment: Deployment,
    state: ExchangeState,
    now: dt.datetime | None = None,
    *,
    smtp: str | None = None,
) -> CheckResult:
    """Evaluate every source's card, record the changes and deliver the alerts they owe."""
    now = now or dt.datetime.now(dt.UTC)
    statuses = evaluate(deployment, state, now=now)
    changes = record_cards(state, statuses, now)
    for change in changes:
        log.info("card of %s: %s -> %s", change.source_id, change.previous, change.card)
    delivery = deliver_alerts(deployment, state, smtp)
    for source_id, channel in delivery.sent:
        log.info("alert for %s sent by %s", source_id, channel)
    return CheckResult(statuses, changes, delivery)


def check(
    deployment: Deployment,
    state: ExchangeState,
    now: dt.datetime | None = None,
    *,
    smtp: str | None = None,
) -> list[SourceStatus]:
    """:func:`run_check`, returning the statuses (what the DAG and the dashboard need)."""
    return run_check(deployment, state, now, smtp=smtp).statuses
