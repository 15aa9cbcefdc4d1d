"""Card-change alerts: a JSON POST to a department's webhook and an e-mail through SMTP.

A department names its destinations in ``departments.yaml`` (``alerts.webhook``,
``alerts.email``); the SMTP server comes from ``GOVX_SMTP_URL``::

    smtp://host:25                       plain SMTP (a relay inside the government network)
    smtp://user:pass@host:587?starttls=true&from=govx@example.gov.cn
    smtps://user:pass@host:465           SMTP over TLS

Each sender raises :class:`AlertFailed` with a masked, credential-free message; the monitor
(:mod:`quality.monitor`) records it and tries again on its next check, so a change is never lost
and, once delivered, never sent again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import smtplib
import ssl
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from exchange.standards import mask_ids_in_text

__all__ = [
    "SMTP_URL_VARIABLE",
    "Alert",
    "AlertFailed",
    "safe_endpoint",
    "send_email",
    "send_webhook",
    "smtp_url",
]

log = logging.getLogger(__name__)

SMTP_URL_VARIABLE = "GOVX_SMTP_URL"
WEBHOOK_TIMEOUT_S = 10.0
SMTP_TIMEOUT_S = 15.0
DEFAULT_SENDER = "govx-monitor@localhost"

CARD_LABEL = {"green": "绿牌", "yellow": "黄牌", "red": "红牌", None: "无"}


class AlertFailed(RuntimeError):
    """A destination did not take the alert; the message names it without credentials."""


@dataclass(frozen=True)
class Alert:
    """One card change of one source, as every channel sends it."""

    source_id: str
    source_name: str
    department: str
    department_name: str
    dataset: str
    card: str
    previous_card: str | None
    changed_at: dt.datetime
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def payload(self) -> dict:
        """The webhook's JSON body (reasons masked)."""
        data = asdict(self)
        data["changed_at"] = self.changed_at.isoformat()
        data["reasons"] = [mask_ids_in_text(r) for r in self.reasons]
        data["event"] = "govx.source_card_changed"
        return data

    def subject(self) -> str:
        """``【红牌】广东省商事登记系统：黄牌 → 红牌``."""
        return (
            f"【{CARD_LABEL[self.card]}】{self.source_name}："
            f"{CARD_LABEL[self.previous_card]} → {CARD_LABEL[self.card]}"
        )

    def body(self) -> str:
        lines = [
            f"数据源 {self.source_name}（{self.source_id}）的监测牌由"
            f"{CARD_LABEL[self.previous_card]}变为{CARD_LABEL[self.card]}。",
            "",
            f"部门：{self.department_name}（{self.department}）",
            f"数据集：{self.dataset}",
            f"变化时间：{self.changed_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC",
            "",
            "原因：",
            *(f"- {r}" for r in self.reasons),
            "",
            "详情：govx quality status",
        ]
        return mask_ids_in_text("\n".join(lines))


def safe_endpoint(url: str) -> str:
    """A URL as it may be logged: scheme, host, port and path; no credentials, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _failure(where: str, exc: BaseException | str) -> AlertFailed:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return AlertFailed(mask_ids_in_text(f"{where}: {text}"))


def send_webhook(url: str, alert: Alert, *, timeout: float = WEBHOOK_TIMEOUT_S) -> None:
    """POST the alert as JSON (UTF-8); any 2xx answer counts as delivered."""
    where = f"webhook {safe_endpoint(url)}"
    try:
        response = requests.post(
            url,
            data=json.dumps(alert.payload(), ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        # the exception text repeats the URL, query and all: name only its kind
        raise _failure(where, type(exc).__name__) from None
    if not 200 <= response.status_code < 300:
        raise _failure(where, f"HTTP {response.status_code}")


def smtp_url() -> str | None:
    """``GOVX_SMTP_URL``, or ``None`` when e-mail alerts are not set up."""
    return os.environ.get(SMTP_URL_VARIABLE) or None


def send_email(url: str, recipients: tuple[str, ...], alert: Alert) -> None:
    """Mail the alert to ``recipients`` through the SMTP server of ``url`` (UTF-8 text)."""
    parts = urlsplit(url)
    where = f"SMTP {safe_endpoint(url)}"
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise _failure(where, f"{SMTP_URL_VARIABLE} must look like smtp://host:port")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    message = EmailMessage()
    message["Subject"] = alert.subject()
    message["From"] = options.get("from", DEFAULT_SENDER)
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain="govexchange")
    message.set_content(alert.body(), charset="utf-8")
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    try:
        if parts.scheme == "smtps":
            client = smtplib.SMTP_SSL(
                parts.hostname, port, timeout=SMTP_TIMEOUT_S, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(parts.hostname, port, timeout=SMTP_TIMEOUT_S)
        with client:
            if options.get("starttls", "").lower() in ("1", "true", "yes"):
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            refused = client.send_message(message, to_addrs=list(recipients))
    except (OSError, smtplib.SMTPException) as exc:
        raise _failure(where, exc) from None
    if refused:  # the others have it; sending again would mail them twice
        log.warning("%s refused %s for %s", where, ", ".join(sorted(refused)), alert.source_id)
