"""Card-change alerts through a real HTTP server and a real SMTP server on loopback ports.

The SMTP server is a small ``socketserver`` speaking the commands ``smtplib`` uses (EHLO, MAIL,
RCPT, DATA, QUIT); it stores each message it accepts, so the tests read what a mailbox would.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import itertools
import json
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.config import Deployment, load_deployment
from exchange.state import ExchangeState, sync_runs
from quality.alerts import Alert, AlertFailed, send_email, send_webhook
from quality.cards import Card
from quality.history import source_cards
from quality.monitor import check, run_check

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
BUSINESS = "gd_business_registry"  # gd_market_regulation, hourly
RAW_ID = "11010519491231002X"
_serial = itertools.count()


# --- a webhook receiver ---------------------------------------------------------------------


@dataclass
class Receiver:
    """What the webhook server got; ``fail_next`` answers that many POSTs with 503."""

    posts: list[dict] = field(default_factory=list)
    fail_next: int = 0
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if received.fail_next:
                received.fail_next -= 1
                self.send_response(503)
                self.end_headers()
                return
            assert self.headers["Content-Type"].startswith("application/json")
            received.posts.append(json.loads(body.decode("utf-8")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_port}/hooks/govx?access_token=s3cret"
    yield received
    server.shutdown()
    server.server_close()


# --- a mailbox ------------------------------------------------------------------------------


@dataclass
class Mailbox:
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    url: str = ""


class _SMTPHandler(socketserver.StreamRequestHandler):
    mailbox: Mailbox

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode("ascii") + b"\r\n")

    def handle(self) -> None:
        self.reply("220 localhost test SMTP")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode("utf-8").strip()
            verb = command[:4].upper()
            if verb == "EHLO":
                self.reply("250-localhost")
                self.reply("250-8BITMIME")
                self.reply("250 SMTPUTF8")
            elif verb in ("HELO", "NOOP", "RSET"):
                self.reply("250 OK")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip(" <>"), []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip(" <>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CR><LF>.<CR><LF>")
                data = bytearray()
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                message = email.message_from_bytes(bytes(data), policy=email.policy.default)
                self.mailbox.messages.append(message)
                self.mailbox.envelopes.append((sender, recipients))
                self.reply("250 OK queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    handler = type("Handler", (_SMTPHandler,), {"mailbox": box})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    box.url = f"smtp://127.0.0.1:{server.server_address[1]}?from=govx@gd.gov.cn"
    yield box
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was just free)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://user:pw@127.0.0.1:{port}/hook?token=s3cret"


# --- deployment and runs ----------------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ExchangeState]:
    with ExchangeState(f"sqlite:///{tmp_path / 'exchange.db'}") as state:
        state.upgrade()
        yield state


def with_alerts(webhook: str | None, emails: tuple[str, ...] = ()) -> Deployment:
    """The sample deployment with alert destinations for the market regulator only."""
    data = load_deployment(REPO / "config").model_dump()
    for department in data["departments"]:
        mine = department["id"] == "gd_market_regulation"
        department["alerts"] = {"webhook": webhook, "email": emails} if mine else {}
    return Deployment.model_validate(data)


def add_run(state: ExchangeState, *, ago: dt.timedelta, status: str = "succeeded", **values):
    started = NOW - ago
    with state.engine.begin() as conn:
        conn.execute(
            sync_runs.insert().values(
                run_id=f"{started:%Y%m%dT%H%M%S}-{next(_serial):06d}",
                source_id=BUSINESS,
                status=status,
                full_refresh=False,
                started_at=started,
                finished_at=started + dt.timedelta(minutes=1),
                cursor_before=None,
                **values,
            )
        )


def sample_alert() -> Alert:
    return Alert(
        source_id=BUSINESS,
        source_name="广东省商事登记系统",
        department="gd_market_regulation",
        department_name="广东省市场监督管理局",
        dataset="business_registry",
        card="red",
        previous_card="yellow",
        changed_at=NOW,
        reasons=(f"failures: 3 failed runs in a row (red at 3); last: bad row {RAW_ID}",),
    )


# --- the senders ----------------------------------------------------------------------------


def test_webhook_posts_the_change_as_utf8_json_with_ids_masked(receiver: Receiver) -> None:
    send_webhook(receiver.url, sample_alert())
    (payload,) = receiver.posts
    assert payload["event"] == "govx.source_card_changed"
    assert (payload["card"], payload["previous_card"]) == ("red", "yellow")
    assert payload["source_name"] == "广东省商事登记系统"
    assert payload["changed_at"] == "2026-11-28T12:00:00+00:00"
    assert RAW_ID not in json.dumps(payload) and "bad row 1101****" in payload["reasons"][0]


def test_webhook_failure_names_the_endpoint_without_its_secrets(receiver: Receiver) -> None:
    receiver.fail_next = 1
    with pytest.raises(AlertFailed) as refused:
        send_webhook(receiver.url, sample_alert())
    assert str(refused.value).endswith("/hooks/govx: HTTP 503")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(AlertFailed) as unreachable:
        send_webhook(closed_port_url(), sample_alert(), timeout=2)
    message = str(unreachable.value)
    assert message.startswith("webhook http://127.0.0.1:") and "ConnectionError" in message
    assert "s3cret" not in message and "pw" not in message


def test_email_goes_through_smtp_with_a_chinese_subject_and_body(mailbox: Mailbox) -> None:
    send_email(mailbox.url, ("ops@gd.gov.cn", "duty@gd.gov.cn"), sample_alert())
    (message,) = mailbox.messages
    assert mailbox.envelopes == [("govx@gd.gov.cn", ["ops@gd.gov.cn", "duty@gd.gov.cn"])]
    assert message["Subject"] == "【红牌】广东省商事登记系统：黄牌 → 红牌"
    body = message.get_content()
    assert "监测牌由黄牌变为红牌" in body and "广东省市场监督管理局" in body
    assert "3 failed runs in a row" in body and RAW_ID not in body


def test_email_failure_is_an_alert_failed(mailbox: Mailbox) -> None:
    port = closed_port_url().split(":")[3].split("/")[0]
    with pytest.raises(AlertFailed, match=r"^SMTP smtp://127\.0\.0\.1:\d+: ConnectionRefused"):
        send_email(f"smtp://127.0.0.1:{port}", ("ops@gd.gov.cn",), sample_alert())
    with pytest.raises(AlertFailed, match="must look like smtp://host:port"):
        send_email("http://127.0.0.1:25", ("ops@gd.gov.cn",), sample_alert())


# --- the monitor: each change once ----------------------------------------------------------


def test_each_card_change_is_sent_once_on_both_channels(
    receiver: Receiver, mailbox: Mailbox, state: ExchangeState
) -> None:
    deployment = with_alerts(receiver.url, ("ops@gd.gov.cn",))
    add_run(state, ago=dt.timedelta(minutes=30), rows_read=2000, rows_loaded=2000)
    statuses = check(deployment, state, NOW, smtp=mailbox.url)
    business = next(s for s in statuses if s.source_id == BUSINESS)
    assert business.card is Card.GREEN
    assert receiver.posts == [] and mailbox.messages == []  # a first green card is the baseline

    error = f"ConnectionError: drop folder unreachable (row {RAW_ID})"
    for minutes in (20, 15, 10):
        add_run(state, ago=dt.timedelta(minutes=minutes), status="failed", error=error)
    result = run_check(deployment, state, NOW, smtp=mailbox.url)
    assert [(c.source_id, c.previous, c.card) for c in result.changes] == [
        (BUSINESS, Card.GREEN, Card.RED)
    ]
    assert sorted(result.delivery.sent) == [(BUSINESS, "email"), (BUSINESS, "webhook")]
    assert [p["card"] for p in receiver.posts] == ["red"]
    assert receiver.posts[0]["reasons"][0].startswith("failures: 3 failed runs in a row")
    assert RAW_ID not in json.dumps(receiver.posts, ensure_ascii=False)
    assert [m["Subject"] for m in mailbox.messages] == ["【红牌】广东省商事登记系统：绿牌 → 红牌"]

    for _ in range(2):  # the card stays red: nothing more is sent
        check(deployment, state, NOW + dt.timedelta(minutes=15), smtp=mailbox.url)
    assert len(receiver.posts) == len(mailbox.messages) == 1

    add_run(state, ago=dt.timedelta(minutes=5), rows_read=2000, rows_loaded=2000)
    check(deployment, state, NOW, smtp=mailbox.url)
    assert [p["card"] for p in receiver.posts] == ["red", "green"]
    assert receiver.posts[1]["previous_card"] == "red"
    assert len(mailbox.messages) == 2


def test_a_failed_delivery_is_retried_on_the_next_check_and_not_lost(
    receiver: Receiver, mailbox: Mailbox, state: ExchangeState, caplog: pytest.LogCaptureFixture
) -> None:
    deployment = with_alerts(receiver.url, ("ops@gd.gov.cn",))
    error = "SchemaDriftError: schema drift under policy freeze: removed credit_code (string)"
    add_run(state, ago=dt.timedelta(minutes=10), status="failed", error=error)
    receiver.fail_next = 1
    result = run_check(deployment, state, NOW, smtp=mailbox.url)
    assert result.delivery.sent == ((BUSINESS, "email"),)
    assert [(f[0], f[1]) for f in result.delivery.failed] == [(BUSINESS, "webhook")]
    assert "s3cret" not in caplog.text and "/hooks/govx: HTTP 503" in caplog.text
    with state.engine.connect() as conn:
        row = conn.execute(
            sa.select(source_cards).where(source_cards.c.source_id == BUSINESS)
        ).one()
    assert row.card == "red" and row.previous_card is None and row.alert_due
    assert row.webhook_sent_at is None and row.email_sent_at is not None
    assert row.alert_attempts == 1 and "HTTP 503" in row.alert_error
    assert receiver.posts == [] and len(mailbox.messages) == 1

    result = run_check(deployment, state, NOW + dt.timedelta(minutes=15), smtp=mailbox.url)
    assert result.changes == [] and result.delivery.sent == ((BUSINESS, "webhook"),)
    assert [p["card"] for p in receiver.posts] == ["red"]
    assert "frozen contract broke" in " ".join(receiver.posts[0]["reasons"])
    assert len(mailbox.messages) == 1  # the e-mail went out the first time; not again
    check(deployment, state, NOW + dt.timedelta(minutes=30), smtp=mailbox.url)
    assert len(receiver.posts) == 1


def test_email_without_an_smtp_server_waits_for_one(
    mailbox: Mailbox, state: ExchangeState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOVX_SMTP_URL", raising=False)
    deployment = with_alerts(None, ("ops@gd.gov.cn",))
    add_run(state, ago=dt.timedelta(hours=3), rows_read=2000, rows_loaded=2000)  # overdue
    result = run_check(deployment, state, NOW)
    assert result.delivery.failed == ((BUSINESS, "email", "e-mail: GOVX_SMTP_URL is not set"),)
    monkeypatch.setenv("GOVX_SMTP_URL", mailbox.url)
    result = run_check(deployment, state, NOW)
    assert result.delivery.sent == ((BUSINESS, "email"),)
    assert mailbox.messages[0]["Subject"] == "【红牌】广东省商事登记系统：无 → 红牌"
    assert "overdue after 2 h" in mailbox.messages[0].get_content()
