"""No unmasked holder ID in any log line of a realistic intake session, client or server side.

A real ``govx serve`` (uvicorn, its access log in the process's output) on a signed store; an
intake system's :class:`LicenseClient` in this process with the root logger at DEBUG (so
urllib3's request lines are captured too) runs the session: token, reads, a license and its
verification, prefill, a company's licenses, the holder's access log, and 422s for bad IDs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from stdnum.cn import ric

from exchange.config import load_deployment
from exchange.standards.holder_ids import mask_id
from license_store.client import InvalidInput, LicenseClient
from license_store.records import LicenseRecord
from license_store.signing import KeyRing
from license_store.store import LicenseStore
from tests.intake import NEWBORN_MATTER, add_client
from tests.servers import start_govx_serve

REPO = Path(__file__).resolve().parents[1]
RESIDENT = "44060420050101123" + ric.calc_check_digit("44060420050101123" + "0")
COMPANY = "91110000600037341L"  # a holder's unified social credit code
BAD_RESIDENT = RESIDENT[:-1] + ("0" if RESIDENT[-1] != "0" else "1")  # wrong check character
BAD_COMPANY = COMPANY[:-1] + "0"
HOLDER_IDS = (RESIDENT, COMPANY, BAD_RESIDENT, BAD_COMPANY)
RAW_ID = re.compile(r"(?<![0-9*])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
CASE = "FS-2026-000777"
NEWBORN_TYPES = (
    "birth_medical_certificate",
    "resident_id_card",
    "household_register",
    "marriage_certificate",
)


def _record(type_code: str, type_name: str, number: str) -> LicenseRecord:
    return LicenseRecord(
        type_code=type_code,
        type_name=type_name,
        issuer_code="11440000MB2000000Q",
        issuer_name="广东省公安厅",
        region_code="440000",
        holder_id=RESIDENT,
        holder_kind="natural",
        holder_name="陈小明",
        number=number,
        issue_date=dt.date(2005, 1, 20),
        valid_from=dt.date(2005, 1, 20),
        valid_to=None,
        status="valid",
        face={"relation": "子女"},
        source_id="test",
        run_id="r1",
    )


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[str, tuple[str, str], tuple[str, str], Path]]:
    """``govx serve`` on a signed store: its URL, an intake and a portal client, its log."""
    with LicenseStore(keyring=KeyRing(), deployment=load_deployment(REPO / "config")) as store:
        store.upgrade()
        store.upsert(
            [
                _record("11440000MB2000000Q001", "居民身份证", "440604000000001"),
                _record("11440000MB2000000Q002", "居民户口簿", "440604000000002"),
            ]
        )
        assert store.sign_pending().signed == 2
        intake = add_client(store, matters=[NEWBORN_MATTER], license_types=NEWBORN_TYPES)
        portal = add_client(store, kind="portal", matters=[], license_types=[], name="粤省事")
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        base, process = start_govx_serve(dict(os.environ), log, log_path)
        try:
            yield base, intake, portal, log_path
        finally:
            process.terminate()
            process.wait(timeout=20)


def _unmasked(text: str) -> list[str]:
    return RAW_ID.findall(text) + [holder for holder in HOLDER_IDS if holder in text]


def test_an_intake_session_logs_no_unmasked_id(
    session: tuple[str, tuple[str, str], tuple[str, str], Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, (intake_id, intake_secret), (portal_id, portal_secret), log_path = session
    caplog.set_level(logging.DEBUG)  # the root logger: urllib3, the client, everything
    # `govx` commands run in process (configure_logging) set the tree to WARNING, unpropagated
    monkeypatch.setattr(logging.getLogger("govexchange"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="govexchange")
    read = {"matter": NEWBORN_MATTER, "case_id": CASE}
    with LicenseClient(base, intake_id, intake_secret) as api:
        found = api.holder_licenses(RESIDENT, **read)
        assert found.count == 2
        card = found.licenses[0]
        assert api.license(card.license_id, **read) == card
        checked = api.verification(card.license_id, **read)
        assert checked.valid
        public = KeyRing().public_path("gd_public_security").read_bytes()
        assert LicenseClient.verify_offline(checked.bundle, public)
        assert api.prefill(NEWBORN_MATTER, RESIDENT, CASE).proofs_eliminated == 2
        assert api.holder_licenses(COMPANY, **read).count == 0
        for bad in (BAD_RESIDENT, BAD_COMPANY):
            with pytest.raises(InvalidInput) as refused:
                api.holder_licenses(bad, **read)
            assert refused.value.status == 422 and bad not in str(refused.value)
        with pytest.raises(InvalidInput):
            api.prefill(NEWBORN_MATTER, BAD_RESIDENT, CASE)
    with LicenseClient(base, portal_id, portal_secret) as portal:
        trail = portal.access_log(RESIDENT, case_id="portal-session-1")
    assert {e.action for e in trail.entries} == {"read", "verify", "prefill"}

    client_side = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "urllib3.connectionpool" in client_side and "govexchange.client" in client_side
    assert f"/v1/holders/{mask_id(RESIDENT)}/licenses" in client_side
    assert not _unmasked(client_side), "an unmasked ID reached the client's logs"
    assert intake_secret not in client_side and portal_secret not in client_side

    server_side = log_path.read_text()
    assert f'"GET /v1/holders/{mask_id(RESIDENT)}/licenses' in server_side  # the access log
    assert f'"GET /v1/holders/{mask_id(BAD_COMPANY)}/licenses' in server_side
    assert "POST /v1/intake/prefill" in server_side
    assert not _unmasked(server_side), "an unmasked ID reached the server's log"
