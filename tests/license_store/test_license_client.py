"""``LicenseClient`` against a real uvicorn server on a loopback port (the app in a thread).

A real signing store on SQLite, the real app and token endpoint; retries are driven by a small
ASGI wrapper in front of the app that answers the next planned requests with an error (503, 429)
and records every request it sees, so the tests can count attempts and token fetches.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from exchange.standards import format_license_id
from exchange.standards.holder_ids import mask_id
from license_store.api import create_app
from license_store.client import (
    AccessLog,
    Forbidden,
    HolderLicenses,
    InvalidInput,
    License,
    LicenseClient,
    LicenseType,
    Matter,
    NotFound,
    Prefill,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    Verification,
)
from license_store.clients import ClientRegistry
from license_store.signing import KeyRing
from license_store.store import LicenseStore
from license_store.tokens import TokenIssuer
from tests.intake import TEST_MATTER, add_client, api_deployment, store_url
from tests.servers import free_port

KEY = b"client-test-token-key-0123456789"
CARD = "11440000MB2000000Q001"  # resident_id_card
REGISTER = "11440000MB2000000Q002"  # household_register
CASE = "FS-2026-000123"
TOKEN_PATH = "/v1/oauth/token"
Request = tuple[str, str]  # (method, path)


@dataclass
class Faults:
    """An ASGI wrapper: answers the next planned non-token requests with an error and records
    every request's method and path."""

    app: Any
    planned: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    seen: list[Request] = field(default_factory=list)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append((scope["method"], scope["path"]))
        if self.planned and scope["path"] != TOKEN_PATH:
            status, headers = self.planned.pop(0)
            body = json.dumps(
                {"type": "about:blank", "title": "planned", "status": status, "code": "planned"}
            ).encode()
            raw = [(b"content-type", b"application/problem+json")]
            raw += [(k.encode(), v.encode()) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def count(self, path_part: str) -> int:
        return sum(1 for _method, path in self.seen if path_part in path)


@dataclass
class Served:
    base: str
    app: FastAPI
    faults: Faults
    store: LicenseStore
    keyring: KeyRing


def _serve_in_thread(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    # log_config=None and no log_level: uvicorn leaves the process's logging alone
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture
def signed_store(sqlite_url: str, tmp_path: Any) -> Iterator[tuple[LicenseStore, KeyRing]]:
    keyring = KeyRing(tmp_path / "keys")
    with LicenseStore(sqlite_url, keyring=keyring, deployment=api_deployment()) as store:
        store.upgrade()
        yield store, keyring


@pytest.fixture
def served(signed_store: tuple[LicenseStore, KeyRing]) -> Iterator[Served]:
    store, keyring = signed_store
    app = create_app(store, api_deployment(), tokens=TokenIssuer(KEY))
    faults = Faults(app)
    base, server, thread = _serve_in_thread(faults)
    app.state.keyring = keyring  # the API checks signatures with the keys the store signed with
    yield Served(base, app, faults, store, keyring)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def holder(served: Served, make_record: Any, samples: Any) -> str:
    """A holder with a resident ID card and a household register, both signed."""
    served.store.upsert(
        [make_record(7), make_record(7, type_code=REGISTER, type_name="户口簿", number="R7")]
    )
    served.store.sign_pending()
    return samples.resident_id(7)


def _client(served: Served, **options: Any) -> LicenseClient:
    client_id, secret = add_client(served.store)
    options.setdefault("backoff", 0.01)
    return LicenseClient(served.base, client_id, secret, **options)


# -- happy path ---------------------------------------------------------------------------------


def test_every_read_returns_typed_results(served: Served, holder: str) -> None:
    with _client(served) as api:
        found = api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE)
        assert isinstance(found, HolderLicenses)
        assert found.holder.id == mask_id(holder) and found.count == 2
        assert all(isinstance(item, License) for item in found.licenses)
        assert {item.type_code for item in found.licenses} == {
            CARD,
            REGISTER,
        }
        first = found.licenses[0]
        with pytest.raises(FrozenInstanceError):
            first.status = "revoked"  # type: ignore[misc]

        one = api.license(first.license_id, matter=TEST_MATTER, case_id=CASE)
        assert one == first and one.issue_date.year == 2024

        checked = api.verification(first.license_id, matter=TEST_MATTER, case_id=CASE)
        assert isinstance(checked, Verification)
        assert checked.valid and checked.signature.valid and checked.status == "valid"
        assert checked.signature.department == "gd_public_security"
        assert set(checked.bundle) == {"content", "proof", "batch"}

        prefill = api.prefill(TEST_MATTER, holder, CASE)
        assert isinstance(prefill, Prefill)
        assert (prefill.materials_total, prefill.proofs_eliminated, prefill.still_required) == (
            4,
            2,
            2,
        )
        satisfied = [m for m in prefill.materials if m.satisfied]
        assert {m.license.type_code for m in satisfied if m.license} == {
            CARD,
            REGISTER,
        }
        assert {m.reason for m in prefill.materials if not m.satisfied} == {
            "no_license",
            "applicant_provides",
        }

        types, matters = api.license_types(), api.matters()
        assert all(isinstance(item, LicenseType) for item in types)
        assert "test_business" in {item.id for item in types}
        assert all(isinstance(item, Matter) for item in matters)
        assert TEST_MATTER in {item.code for item in matters}

    portal_id, portal_secret = add_client(
        served.store, kind="portal", matters=[], license_types=[], name="粤省事"
    )
    with LicenseClient(served.base, portal_id, portal_secret) as portal:
        trail = portal.access_log(holder, case_id="portal-1", limit=10)
    assert isinstance(trail, AccessLog) and trail.holder.id == mask_id(holder)
    assert [e.action for e in trail.entries][:4] == ["prefill", "verify", "read", "read"]
    assert trail.entries[0].case_id == CASE and trail.entries[0].client_name == "测试受理系统"


def test_offline_verification_needs_the_departments_key_and_the_signed_content(
    served: Served, holder: str
) -> None:
    with _client(served) as api:
        [card, _register] = api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE).licenses
        bundle = api.verification(card.license_id, matter=TEST_MATTER, case_id=CASE).bundle
    public = served.keyring.public_path("gd_public_security").read_bytes()
    assert LicenseClient.verify_offline(bundle, public)
    assert LicenseClient.verify_offline(bundle, public.decode("ascii"))

    tampered = copy.deepcopy(dict(bundle))
    tampered["content"]["holder_name"] = "李四"
    assert not LicenseClient.verify_offline(tampered, public)
    forged = copy.deepcopy(dict(bundle))
    forged["batch"]["leaves"] += 1
    assert not LicenseClient.verify_offline(forged, public)
    assert not LicenseClient.verify_offline({}, public)

    served.keyring.generate("foshan_civil_affairs")
    foreign = served.keyring.public_path("foshan_civil_affairs").read_bytes()
    assert not LicenseClient.verify_offline(bundle, foreign)


# -- tokens -------------------------------------------------------------------------------------


def test_the_token_is_cached_and_refreshed_before_it_expires(served: Served, holder: str) -> None:
    served.app.state.tokens = TokenIssuer(KEY, ttl=2)  # refreshed 1 s before expiry
    with _client(served) as api:
        api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE)
        api.license_types()
        assert served.faults.count(TOKEN_PATH) == 1
        time.sleep(1.1)
        api.license_types()
        assert served.faults.count(TOKEN_PATH) == 2


def test_a_refused_token_is_replaced_once_and_the_call_retried(served: Served, holder: str) -> None:
    with _client(served) as api:
        api.license_types()
        served.app.state.tokens = TokenIssuer(b"another-token-key-0123456789abcd")  # key rotated
        found = api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE)
        assert found.count == 2
        assert served.faults.count(TOKEN_PATH) == 2
        assert served.faults.count("/licenses") == 2  # refused once, then answered

    served.app.state.tokens = TokenIssuer(KEY, ttl=-30)  # every token it issues has expired
    with _client(served) as api:
        with pytest.raises(Unauthorized) as refused:
            api.license_types()
        assert (refused.value.status, refused.value.code) == (401, "token_expired")
        assert served.faults.count(TOKEN_PATH) == 4  # one refresh, not a loop
        assert served.faults.count("/license-types") == 3


def test_a_revoked_client_gets_unauthorized_without_its_secret(served: Served, holder: str) -> None:
    with _client(served) as api:
        api.license_types()
        with ClientRegistry(store_url(served.store)) as registry:
            registry.revoke(api.client_id)
        served.app.state.clients.ttl = 0
        with pytest.raises(Unauthorized) as refused:
            api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE)
        assert refused.value.code == "invalid_client"  # the refresh was refused too
        assert api._secret not in str(refused.value) and api._secret not in repr(api)
        assert holder not in str(refused.value)


# -- retries ------------------------------------------------------------------------------------


def test_503_and_429_are_retried_honouring_retry_after(served: Served, holder: str) -> None:
    faults = served.faults
    with _client(served) as api:
        api.license_types()  # the token first
        faults.planned += [(503, {}), (502, {})]
        assert api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE).count == 2
        assert faults.count("/licenses") == 3

        faults.planned.append((429, {"Retry-After": "1"}))
        started = time.monotonic()
        assert api.matters()
        assert time.monotonic() - started >= 0.9
        assert faults.count("/catalog/matters") == 2

        faults.planned += [(503, {})] * 4  # more than the retries
        with pytest.raises(Unavailable) as failed:
            api.license_types()
        assert failed.value.status == 503 and failed.value.transient
        assert faults.count("/license-types") == 1 + 4

        faults.planned += [(500, {})] * 4
        with pytest.raises(ServerError):
            api.prefill(TEST_MATTER, holder, CASE)  # a read: retried like the others
        assert faults.count("/intake/prefill") == 4


def test_retry_after_is_capped_and_a_lasting_429_is_rate_limited(served: Served) -> None:
    faults = served.faults
    with _client(served, retries=1, max_retry_after=0.2) as api:
        api.license_types()
        faults.planned += [(429, {"Retry-After": "3600"})] * 2
        started = time.monotonic()
        with pytest.raises(RateLimited) as limited:
            api.matters()
        assert time.monotonic() - started < 5
        assert limited.value.retry_after == 3600 and limited.value.transient
        assert faults.count("/catalog/matters") == 2


def test_other_4xx_are_not_retried(served: Served, holder: str) -> None:
    faults = served.faults
    card_only, secret = add_client(served.store, license_types=["marriage_certificate"])
    with LicenseClient(served.base, card_only, secret) as api:
        with pytest.raises(Forbidden) as forbidden:
            api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE)
        assert forbidden.value.code == "license_type_not_granted"
        assert faults.count("/licenses") == 1

    bad = holder[:-1] + ("0" if holder[-1] != "0" else "1")
    with _client(served) as api:
        with pytest.raises(InvalidInput) as invalid:
            api.holder_licenses(bad, matter=TEST_MATTER, case_id=CASE)
        assert (invalid.value.status, invalid.value.code) == (422, "invalid_holder_id")
        assert bad not in str(invalid.value) and bad[:-1] not in str(invalid.value)
        assert faults.count(f"/holders/{bad}/") == 1

        with pytest.raises(InvalidInput) as no_case:
            api.holder_licenses(holder, matter=TEST_MATTER, case_id="a b;DROP")
        assert no_case.value.code == "invalid_case_id"

        missing = format_license_id(CARD, "11440604MB2C00012P", "20240000042", 1)
        with pytest.raises(NotFound) as unknown:
            api.license(missing, matter=TEST_MATTER, case_id=CASE)
        assert (unknown.value.status, unknown.value.code) == (404, "license_not_found")
        assert faults.count("/v1/licenses/") == 1


def test_no_connection_is_unavailable_after_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    secret = "s3cret-never-shown"
    holder = "11010519491231002X"
    with (
        caplog.at_level(logging.DEBUG),
        LicenseClient(base, "intake-x", secret, retries=2, backoff=0.01) as api,
        pytest.raises(Unavailable) as failed,
    ):
        api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE)
    assert (failed.value.status, failed.value.code) == (None, "connection_failed")
    assert failed.value.transient and failed.value.__cause__ is None
    for text in (str(failed.value), caplog.text):
        assert secret not in text and holder not in text
    assert "/v1/oauth/token" in caplog.text  # the token could not be fetched


def test_logs_mask_holder_ids_and_never_show_the_secret(
    served: Served,
    holder: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `govx` commands run in process (configure_logging) set the tree to WARNING, unpropagated
    monkeypatch.setattr(logging.getLogger("govexchange"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="govexchange")
    # and logging configured by earlier tests in this process (Airflow's dictConfig) may have
    # disabled or silenced urllib3's loggers, whose retry lines this test reads
    for name in ("urllib3", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "propagate", True)
        caplog.set_level(logging.DEBUG, logger=name)
    with caplog.at_level(logging.DEBUG), _client(served) as api:
        api.license_types()
        served.faults.planned.append((503, {}))
        api.holder_licenses(holder, matter=TEST_MATTER, case_id=CASE)  # retried: urllib3 logs
        api.prefill(TEST_MATTER, holder, CASE)
        with pytest.raises(Forbidden):  # an intake client may not read the access log
            api.access_log(holder, case_id=CASE)
        secret = api._secret
    # the client's side; the server's masked access log is tests/test_logs_masked.py's
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("uvicorn"))
    assert f"Incremented Retry for (url='/v1/holders/{mask_id(holder)}/licenses" in text
    assert holder not in text and secret not in text
    assert any(r.name == "govexchange.client" for r in caplog.records)
