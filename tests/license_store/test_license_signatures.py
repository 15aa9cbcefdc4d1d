"""Signing license versions and verifying them: proofs stored, tampering found, offline check."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from license_store import LicenseNotFound, LicenseStore
from license_store.database import create_store_engine
from license_store.models import license_proofs, license_versions, licenses, signature_batches
from license_store.signing import KeyRing, verify_bundle
from license_store.verification import verify_license

FOSHAN_CIVIL_AFFAIRS = "11440600MB2009411K"  # a configured department's code (issuer)


def _count(url: str, table: sa.Table) -> int:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    finally:
        engine.dispose()


def _execute(url: str, statement: Any) -> None:
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(statement)
    finally:
        engine.dispose()


def test_every_published_version_gets_a_proof_and_re_signing_is_idempotent(
    signing_store: LicenseStore, make_record: Any, db_url: str
) -> None:
    signing_store.upsert([make_record(n) for n in range(5)])
    signing_store.upsert([make_record(n, holder_name=f"改名{n}") for n in range(2)])
    first = signing_store.sign_pending()
    assert (first.signed, first.batches, first.no_department) == (7, 1, 0)
    assert _count(db_url, license_proofs) == _count(db_url, license_versions) == 7
    again = signing_store.sign_pending()
    assert (again.signed, again.batches) == (0, 0)
    assert _count(db_url, signature_batches) == 1


def test_one_batch_per_department_and_a_missing_key_is_generated_with_a_warning(
    signing_store: LicenseStore,
    make_record: Any,
    keyring: KeyRing,
    caplog: pytest.LogCaptureFixture,
) -> None:
    signing_store.upsert(
        [make_record(0), make_record(1, issuer_code=FOSHAN_CIVIL_AFFAIRS, issuer_name="民政局")]
    )
    with caplog.at_level(logging.WARNING, logger="govexchange.license_store"):
        result = signing_store.sign_pending()
    assert (result.signed, result.batches) == (2, 2)
    assert keyring.departments() == ["foshan_civil_affairs", "gd_public_security"]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "gd_public_security had no signing key" in warned
    assert "foshan_civil_affairs had no signing key" in warned


def test_a_crash_while_writing_leaves_nothing_half_signed_and_a_re_run_signs_all(
    signing_store: LicenseStore,
    make_record: Any,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import license_store.store as store_module

    signing_store.upsert(
        [make_record(0), make_record(1, issuer_code=FOSHAN_CIVIL_AFFAIRS, issuer_name="民政局")]
    )
    real = store_module.write_batch
    calls: list[str] = []

    def crash_on_second(conn: Any, batch: Any, rows: Any, proofs: Any) -> str:
        calls.append(batch.issuer)
        batch_id = real(conn, batch, rows, proofs)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return batch_id

    monkeypatch.setattr(store_module, "write_batch", crash_on_second)
    with pytest.raises(RuntimeError):
        signing_store.sign_pending()
    assert calls == ["foshan_civil_affairs", "gd_public_security"]
    assert (_count(db_url, signature_batches), _count(db_url, license_proofs)) == (0, 0)
    monkeypatch.setattr(store_module, "write_batch", real)
    result = signing_store.sign_pending()
    assert (result.signed, result.batches) == (2, 2)
    assert _count(db_url, license_proofs) == 2


def test_verification_of_a_signed_license_and_its_offline_bundle(
    signing_store: LicenseStore, make_record: Any, keyring: KeyRing
) -> None:
    signing_store.upsert([make_record(0)])
    signing_store.upsert([make_record(0, holder_name="改名")])
    signing_store.sign_pending()
    current = signing_store.get(
        signing_store.licenses_for_holder(make_record(0).holder_id)[0].license_id
    )
    first_version_id = signing_store.versions(current.license_id)[0].license_id
    result = verify_license(signing_store, first_version_id, keyring)  # any version's id
    assert (result.license_id, result.status, result.version) == (current.license_id, "valid", 2)
    assert result.signature.valid and result.signature.reason is None
    assert result.signature.department == "gd_public_security"
    assert result.signature.key_id and result.signature.batch_id and result.signature.signed_at
    as_dict = json.loads(json.dumps(result.as_dict()))
    assert as_dict["signature"]["valid"] is True
    public_pem = keyring.public_path("gd_public_security").read_bytes()
    assert verify_bundle(as_dict["bundle"], public_pem)
    other = KeyRing(keyring.directory.parent / "other")
    other.generate("foshan_civil_affairs")
    assert not verify_bundle(
        as_dict["bundle"], other.public_path("foshan_civil_affairs").read_bytes()
    )
    forged = {**as_dict["bundle"], "content": {**as_dict["bundle"]["content"], "status": "valid2"}}
    assert not verify_bundle(forged, public_pem)


def test_tampered_content_fails_verification_with_a_reason(
    signing_store: LicenseStore, make_record: Any, keyring: KeyRing, db_url: str
) -> None:
    signing_store.upsert([make_record(0), make_record(1), make_record(2)])
    signing_store.sign_pending()
    ids = [
        signing_store.licenses_for_holder(make_record(n).holder_id)[0].license_id for n in (0, 1, 2)
    ]
    # the row readers get
    _execute(
        db_url, licenses.update().where(licenses.c.license_id == ids[0]).values(holder_name="冒名")
    )
    check = verify_license(signing_store, ids[0], keyring).signature
    assert (check.valid, check.reason) == (False, "content changed since signing")
    assert check.department == "gd_public_security"
    # the version's recorded content (row and history changed together)
    tampered = {**signing_store.versions(ids[1])[0].content, "number": "HK99999999"}
    _execute(
        db_url, licenses.update().where(licenses.c.license_id == ids[1]).values(number="HK99999999")
    )
    _execute(
        db_url,
        license_versions.update()
        .where(license_versions.c.license_id == ids[1])
        .values(content=tampered),
    )
    check = verify_license(signing_store, ids[1], keyring).signature
    assert (check.valid, check.reason) == (False, "content changed since signing")
    # the batch's signature
    _execute(db_url, signature_batches.update().values(signature="A" * 88))
    check = verify_license(signing_store, ids[2], keyring).signature
    assert (check.valid, check.reason) == (False, "bad signature")


def test_unsigned_and_unknown_licenses(
    signing_store: LicenseStore, make_record: Any, keyring: KeyRing
) -> None:
    signing_store.upsert([make_record(0)])
    license_id = signing_store.licenses_for_holder(make_record(0).holder_id)[0].license_id
    result = verify_license(signing_store, license_id, keyring)
    assert (result.signature.valid, result.signature.reason, result.bundle) == (
        False,
        "unsigned",
        None,
    )
    with pytest.raises(LicenseNotFound):
        verify_license(signing_store, license_id.replace(".001.", ".009."), keyring)
    with pytest.raises(LicenseNotFound):
        verify_license(signing_store, "not-a-license", keyring)


def test_versions_no_department_signs_stay_unsigned_with_a_warning(
    signing_store: LicenseStore, make_record: Any, caplog: pytest.LogCaptureFixture
) -> None:
    signing_store.upsert([make_record(0, type_code="11440000MB2000000Q999")])
    with caplog.at_level(logging.WARNING, logger="govexchange.license_store"):
        result = signing_store.sign_pending()
    assert (result.signed, result.no_department) == (0, 1)
    assert "left unsigned" in caplog.text


def _signed_flags(url: str) -> dict[tuple[str, int], bool]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    license_versions.c.license_base,
                    license_versions.c.version,
                    license_versions.c.signed,
                )
            )
            return {(base, version): bool(signed) for base, version, signed in rows}
    finally:
        engine.dispose()


def _proved(url: str) -> set[tuple[str, int]]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(license_proofs.c.license_base, license_proofs.c.version))
            return {(base, version) for base, version in rows}
    finally:
        engine.dispose()


def test_a_version_is_flagged_signed_exactly_when_it_has_its_proof(
    signing_store: LicenseStore, make_record: Any, db_url: str
) -> None:
    """The signer's work list (``signed`` and its partial index) agrees with the proofs: new
    versions wait, signed ones never come back, and a version of a signed license waits alone."""
    signing_store.upsert([make_record(n) for n in range(6)])
    assert set(_signed_flags(db_url).values()) == {False}
    signing_store.sign_pending()
    flags = _signed_flags(db_url)
    assert set(flags.values()) == {True} and set(flags) == _proved(db_url)
    signing_store.upsert([make_record(0, holder_name="改名")])
    waiting = [key for key, signed in _signed_flags(db_url).items() if not signed]
    assert [version for _, version in waiting] == [2]
    assert signing_store.sign_pending().signed == 1
    flags = _signed_flags(db_url)
    assert all(flags.values()) and set(flags) == _proved(db_url) and len(flags) == 7


def test_the_migration_flags_the_versions_that_already_have_a_proof(
    signing_store: LicenseStore, make_record: Any, db_url: str
) -> None:
    """A store signed before revision 0007: after the downgrade and upgrade, exactly the versions
    with a proof are flagged, and the next signing signs only the one that had none."""
    from alembic import command

    from license_store.migrations import alembic_config

    signing_store.upsert([make_record(n) for n in range(4)])
    signing_store.sign_pending()
    signing_store.upsert([make_record(1, holder_name="改名")])  # version 2, unsigned
    engine = create_store_engine(db_url)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0006")
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    flags = _signed_flags(db_url)
    assert {key for key, signed in flags.items() if signed} == _proved(db_url)
    assert sorted(version for (_, version), signed in flags.items() if not signed) == [2]
    assert signing_store.sign_pending().signed == 1
