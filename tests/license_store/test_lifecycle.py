"""License lifecycle: suspend, reinstate, revoke and daily expiry make signed, audited versions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from exchange.cli import app
from license_store import ConflictError, LicenseStore
from license_store.audit import AuditLog
from license_store.signing import KeyRing
from license_store.verification import verify_license

TODAY = dt.date(2026, 11, 28)


@pytest.fixture
def audit(db_url: str) -> Iterator[AuditLog]:
    with AuditLog(db_url) as opened:
        yield opened


def _publish(store: LicenseStore, record: Any) -> str:
    store.upsert([record])
    store.sign_pending()
    return store.licenses_for_holder(record.holder_id)[0].license_id


def test_suspend_reinstate_revoke_make_signed_audited_versions(
    signing_store: LicenseStore, make_record: Any, keyring: KeyRing, audit: AuditLog
) -> None:
    record = make_record(0)
    first = _publish(signing_store, record)
    suspended = signing_store.suspend(first, reason="CASE-2026-001", actor="operator-7")
    assert (suspended.status, suspended.version) == ("suspended", 2)
    assert suspended.license_id != first and suspended.license_id.endswith(suspended.license_id[-1])
    reinstated = signing_store.reinstate(first, reason="CASE-2026-002", actor="operator-7")
    assert (reinstated.status, reinstated.version) == ("valid", 3)
    revoked = signing_store.revoke(reinstated.license_id, reason="CASE-2026-003", actor="op-8")
    assert (revoked.status, revoked.version) == ("revoked", 4)
    history = signing_store.versions(first)
    assert [v.content["status"] for v in history] == ["valid", "suspended", "valid", "revoked"]
    assert [v.run_id for v in history[1:]] == ["lifecycle"] * 3
    check = verify_license(signing_store, first, keyring)
    assert (check.status, check.signature.valid, check.version) == ("revoked", True, 4)
    entries = audit.for_holder(record.holder_id)
    assert [(e.action, e.matter, e.case_id, e.client_id) for e in reversed(entries)] == [
        ("change", "lifecycle", "CASE-2026-001", "operator-7"),
        ("change", "lifecycle", "CASE-2026-002", "operator-7"),
        ("change", "lifecycle", "CASE-2026-003", "op-8"),
    ]
    assert entries[0].license_ids == (revoked.license_id,)
    assert audit.verify().ok


def test_revoked_is_final_and_never_valid_again(
    signing_store: LicenseStore, make_record: Any
) -> None:
    record = make_record(0)
    license_id = _publish(signing_store, record)
    signing_store.revoke(license_id, reason="CASE-1", actor="op")
    with pytest.raises(ConflictError, match="revocation is final: it cannot be reinstated"):
        signing_store.reinstate(license_id, reason="CASE-2", actor="op")
    with pytest.raises(ConflictError, match="revoked"):
        signing_store.suspend(license_id, reason="CASE-3", actor="op")
    with pytest.raises(ConflictError, match=r"already revoked|final"):
        signing_store.revoke(license_id, reason="CASE-4", actor="op")
    # the department's next sync still says valid, and changes the address: still revoked
    signing_store.upsert([record])
    moved = make_record(0, face={"address": "新地址", "relation": "户主"})
    signing_store.upsert([moved])
    current = signing_store.licenses_for_holder(record.holder_id)
    assert [(lic.status, lic.face["address"]) for lic in current] == [("revoked", "新地址")]


def test_a_sync_does_not_lift_a_suspension(signing_store: LicenseStore, make_record: Any) -> None:
    record = make_record(0)
    license_id = _publish(signing_store, record)
    signing_store.suspend(license_id, reason="CASE-1", actor="op")
    assert signing_store.upsert([record]).unchanged == 1
    assert signing_store.get(license_id).status == "suspended"


def test_invalid_transitions_and_references(signing_store: LicenseStore, make_record: Any) -> None:
    record = make_record(0)
    license_id = _publish(signing_store, record)
    with pytest.raises(ConflictError, match=r"cannot reinstate .* it is valid"):
        signing_store.reinstate(license_id, reason="CASE-1", actor="op")
    with pytest.raises(ValueError, match=r"reason must have 1\.\.64"):
        signing_store.suspend(license_id, reason=" ", actor="op")
    signing_store.suspend(license_id, reason="CASE-1", actor="op")
    with pytest.raises(ConflictError) as caught:
        signing_store.suspend(license_id, reason="CASE-1", actor="op")
    assert record.holder_id not in str(caught.value)
    assert "already suspended" in str(caught.value)


def test_expire_due_versions_signs_and_audits_once(
    signing_store: LicenseStore, make_record: Any, keyring: KeyRing, audit: AuditLog
) -> None:
    due = make_record(0, valid_to=dt.date(2026, 11, 27))
    later = make_record(1, valid_to=TODAY)
    signing_store.upsert([due, later])
    signing_store.sign_pending()
    assert signing_store.expire_due(TODAY) == 1
    assert signing_store.expire_due(TODAY) == 0  # idempotent
    expired = signing_store.licenses_for_holder(due.holder_id)[0]
    assert (expired.status, expired.version) == ("expired", 2)
    assert signing_store.versions(expired.license_id)[-1].run_id == "expiry:2026-11-28"
    assert verify_license(signing_store, expired.license_id, keyring).signature.valid
    assert signing_store.licenses_for_holder(later.holder_id)[0].version == 1
    [entry] = audit.for_holder(due.holder_id)
    assert (entry.client_id, entry.matter, entry.case_id) == (
        "license_expiry",
        "expiry",
        "2026-11-28",
    )
    # the department's data still says valid with the old date: stays expired, no new version
    assert signing_store.upsert([due]).unchanged == 1
    # a renewal (a later valid_to) makes it valid again
    renewed = make_record(0, valid_to=dt.date(2036, 11, 27))
    assert signing_store.upsert([renewed]).updated == 1
    assert signing_store.get(expired.license_id).status == "valid"


def test_the_license_step_audits_its_new_versions_once_per_holder(
    db_url: str, make_record: Any, audit: AuditLog, samples: Any
) -> None:
    second = make_record(0, type_code=samples.marriage_type, number="JH0001")
    with LicenseStore(db_url, audit_changes=True) as store:
        store.upgrade()
        result = store.upsert([make_record(0), second, make_record(1)])
        assert store.upsert([make_record(0)]).unchanged == 1  # nothing new: nothing audited
        moved = store.upsert([make_record(1, holder_name="改名", run_id="run-2")])
    assert len(result.changes) == 3
    assert result.changes[0].holder_id not in repr(result)
    entries = audit.tail(10)[::-1]
    assert [(e.client_id, e.action, e.matter, e.case_id) for e in entries] == [
        ("sync:fs_household", "change", "sync", "run-1"),
        ("sync:fs_household", "change", "sync", "run-1"),
        ("sync:fs_household", "change", "sync", "run-2"),
    ]
    by_holder = {c.holder_id: [] for c in result.changes}
    for change in result.changes:
        by_holder[change.holder_id].append(change.license_id)
    assert [list(e.license_ids) for e in entries[:2]] == list(by_holder.values())
    assert entries[2].license_ids == (moved.changes[0].license_id,)


runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def cli_store(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> Iterator[LicenseStore]:
    """The store the CLI opens ($GOVX_LICENSE_DB_URL), migrated; keys under $GOVX_HOME/keys."""
    monkeypatch.setenv("GOVX_LICENSE_DB_URL", sqlite_url)
    monkeypatch.setenv("GOVX_CONFIG", str(Path(__file__).resolve().parents[2] / "config"))
    with LicenseStore(sqlite_url) as opened:
        opened.upgrade()
        yield opened


def test_govx_lifecycle_commands_mask_the_holder_and_explain_refusals(
    cli_store: LicenseStore, make_record: Any
) -> None:
    record = make_record(0, valid_to=dt.date(2020, 1, 1))
    other = make_record(1)
    cli_store.upsert([record, other])
    first = cli_store.licenses_for_holder(other.holder_id)[0].license_id
    result = runner.invoke(
        app, ["lifecycle", "suspend", first, "--reason", "CASE-9", "--actor", "op"]
    )
    assert result.exit_code == 0, result.output
    assert "is now suspended" in result.output and "(version 2, holder 4406" in result.output
    assert other.holder_id not in result.output
    result = runner.invoke(app, ["lifecycle", "revoke", first, "--reason", "CASE-10"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["lifecycle", "reinstate", first, "--reason", "CASE-11"])
    assert result.exit_code == 1
    assert "revocation is final" in result.output and other.holder_id not in result.output
    result = runner.invoke(app, ["lifecycle", "suspend", "1.2.3", "--reason", "CASE-12"])
    assert (result.exit_code, "no license" in result.output) == (1, True)
    result = runner.invoke(app, ["lifecycle", "suspend", first, "--reason", "x" * 65])
    assert (result.exit_code, "1..64 characters" in result.output) == (2, True)
    result = runner.invoke(app, ["lifecycle", "expire", "--today", "2026-11-28"])
    assert (result.exit_code, result.output.strip()) == (0, "1 licenses expired")
    assert cli_store.licenses_for_holder(record.holder_id)[0].version == 2
    result = runner.invoke(app, ["lifecycle", "expire", "--today", "28/11/2026"])
    assert result.exit_code == 2
    assert cli_store.get(first).status == "revoked"
    entries = AuditLog(cli_store.url).tail(5)
    assert [e.matter for e in entries] == ["expiry", "lifecycle", "lifecycle"]
    assert entries[-1].client_id == "op" and entries[-2].client_id.startswith("cli:")


def test_govx_lifecycle_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["lifecycle", "--help"])
    assert result.exit_code == 0
    for command in ("suspend", "revoke", "reinstate", "expire"):
        assert command in result.output
