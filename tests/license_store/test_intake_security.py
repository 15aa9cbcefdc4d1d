"""Authentication, minimum-necessary access, prefill, rate limits and the audit of every read.

A real store (SQLite, and PostgreSQL where marked), the real app through TestClient, tokens from
the real token endpoint; forged, expired and wrong-audience tokens are made with pyjwt.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient

from exchange.standards import format_license_id
from license_store.api import create_app
from license_store.audit import AuditLog
from license_store.clients import ClientRegistry
from license_store.store import LicenseStore
from license_store.tokens import TokenIssuer
from tests.intake import (
    NEWBORN_MATTER,
    TEST_MATTER,
    add_client,
    api_deployment,
    headers,
    store_url,
    token,
)

KEY = b"test-token-key-" * 3
CARD = "11440000MB2000000Q001"  # resident_id_card in the sample config (make_record's default)
REGISTER = "11440000MB2000000Q002"  # household_register


@pytest.fixture
def api(sqlite_store: LicenseStore) -> Iterator[TestClient]:
    app = create_app(sqlite_store, api_deployment(), tokens=TokenIssuer(KEY))
    with TestClient(app) as client:
        yield client


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code, body
    return body


def _read(api: TestClient, holder: str, access: str, matter: str = TEST_MATTER, case="C-1"):
    return api.get(
        f"/v1/holders/{holder}/licenses", params={"matter": matter}, headers=headers(access, case)
    )


# -- the token endpoint -------------------------------------------------------------------------


def test_token_endpoint_issues_a_short_lived_jwt(api: TestClient, sqlite_store) -> None:
    client_id, secret = add_client(sqlite_store)
    response = api.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 900
    assert body["scope"] == "catalog:read licenses:read"
    claims = jwt.decode(
        body["access_token"], KEY, algorithms=["HS256"], audience=TokenIssuer(KEY).audience
    )
    assert claims["sub"] == client_id and claims["exp"] - claims["iat"] == body["expires_in"]
    assert secret not in response.text

    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    narrowed = api.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials", "scope": "catalog:read"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "catalog:read"
    read = _read(api, "11010519491231002X", narrowed.json()["access_token"])
    _problem(read, 403, "insufficient_scope")


def test_token_endpoint_refuses_bad_credentials_alike(api: TestClient, sqlite_store) -> None:
    client_id, secret = add_client(sqlite_store)
    grant = {"grant_type": "client_credentials"}
    wrong = api.post(
        "/v1/oauth/token", data={**grant, "client_id": client_id, "client_secret": secret + "x"}
    )
    unknown = api.post(
        "/v1/oauth/token", data={**grant, "client_id": "nobody", "client_secret": secret}
    )
    for response in (wrong, unknown):
        body = _problem(response, 401, "invalid_client")
        assert body["detail"] == "client authentication failed"
        assert secret not in response.text
    _problem(
        api.post(
            "/v1/oauth/token",
            data={"grant_type": "password", "client_id": client_id, "client_secret": secret},
        ),
        400,
        "unsupported_grant_type",
    )
    _problem(api.post("/v1/oauth/token", data=grant), 400, "invalid_request")
    _problem(
        api.post(
            "/v1/oauth/token",
            data={
                **grant,
                "client_id": client_id,
                "client_secret": secret,
                "scope": "exchange:push",
            },
        ),
        400,
        "invalid_scope",
    )
    with ClientRegistry(store_url(sqlite_store)) as registry:
        registry.revoke(client_id)
    _problem(
        api.post(
            "/v1/oauth/token", data={**grant, "client_id": client_id, "client_secret": secret}
        ),
        401,
        "invalid_client",
    )


# -- every protected route refuses a bad token --------------------------------------------------

UNPROTECTED = {"/healthz", "/readyz", "/v1/oauth/token"}
LICENSE_ID = format_license_id("11440000MB2000000Q001", "11440604MB2C00012P", "20240000042", 1)


def _protected_calls(api: TestClient) -> list[tuple[str, str]]:
    calls = []
    for path, operations in api.get("/openapi.json").json()["paths"].items():
        if path in UNPROTECTED:
            continue
        concrete = path.replace("{holder_id}", "11010519491231002X").replace(
            "{license_id}", LICENSE_ID
        )
        calls.extend((method.upper(), concrete) for method in operations)
    return calls


def _forged_tokens(api: TestClient, sqlite_store) -> dict[str, tuple[str, str]]:
    client_id, secret = add_client(
        sqlite_store, scopes=["licenses:read", "catalog:read", "metrics:read", "access-log:read"]
    )
    good = token(api, client_id, secret)
    other_id, _ = add_client(sqlite_store, client_id="other-intake")
    client = ClientRegistry(store_url(sqlite_store)).get(client_id)
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    swapped = (
        base64.urlsafe_b64encode(json.dumps({**claims, "sub": other_id}).encode())
        .decode()
        .rstrip("=")
    )
    return {
        "missing": ("", "missing_token"),
        "not bearer": (f"Basic {good}", "invalid_token"),
        "garbage": ("Bearer not.a.jwt", "invalid_token"),
        "expired": (
            "Bearer " + TokenIssuer(KEY, ttl=-120).issue(client)[0],
            "token_expired",
        ),
        "forged key": ("Bearer " + TokenIssuer(b"x" * 48).issue(client)[0], "invalid_token"),
        "wrong audience": (
            "Bearer " + TokenIssuer(KEY, audience="govexchange:another-node").issue(client)[0],
            "invalid_token",
        ),
        "alg none": (
            "Bearer " + jwt.encode(claims, None, algorithm="none"),
            "invalid_token",
        ),
        "another client's sub": (f"Bearer {header}.{swapped}.{signature}", "invalid_token"),
    }


def test_every_protected_route_rejects_missing_expired_forged_and_foreign_tokens(
    api: TestClient, sqlite_store
) -> None:
    calls = _protected_calls(api)
    assert len(calls) >= 8, calls  # the intake routes, the catalogues and /metrics
    for name, (authorization, code) in _forged_tokens(api, sqlite_store).items():
        for method, path in calls:
            sent = {"X-Case-Id": "C-1"}
            if authorization:
                sent["Authorization"] = authorization
            response = api.request(
                method,
                path,
                params={"matter": TEST_MATTER},
                headers=sent,
                json={
                    "matter": TEST_MATTER,
                    "applicant_id": "11010519491231002X",
                    "case_id": "C-1",
                },
            )
            body = _problem(response, 401, code)
            assert response.headers["www-authenticate"].startswith("Bearer"), (name, path)
            assert "11010519491231002X" not in response.text, (name, path)
            assert body["status"] == 401


def test_unprotected_routes_need_no_token(api: TestClient) -> None:
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200


def test_revoked_client_and_rotated_secret_retire_tokens(api: TestClient, sqlite_store) -> None:
    client_id, secret = add_client(sqlite_store)
    before = token(api, client_id, secret)
    holder = "11010519491231002X"
    assert _read(api, holder, before).status_code == 200
    with ClientRegistry(store_url(sqlite_store)) as registry:
        new_secret = registry.rotate(client_id)
    api.app.state.clients.ttl = 0  # no wait for the cache
    _problem(_read(api, holder, before), 401, "invalid_token")
    after = token(api, client_id, new_secret)
    assert _read(api, holder, after).status_code == 200
    with ClientRegistry(store_url(sqlite_store)) as registry:
        registry.revoke(client_id)
    _problem(_read(api, holder, after), 401, "invalid_token")


# -- minimum necessary --------------------------------------------------------------------------


def test_only_the_matters_granted_types_are_returned(
    api: TestClient, sqlite_store, make_record, samples
) -> None:
    holder = samples.resident_id(11)
    sqlite_store.upsert(
        [make_record(11), make_record(11, type_code=REGISTER, type_name="户口簿", number="R11")]
    )
    card_only, secret = add_client(sqlite_store, license_types=["resident_id_card"])
    access = token(api, card_only, secret)
    body = _read(api, holder, access).json()
    assert [item["type_code"] for item in body["licenses"]] == [CARD]

    everything, secret = add_client(sqlite_store)
    assert {
        item["type_code"]
        for item in _read(api, holder, token(api, everything, secret)).json()["licenses"]
    } == {CARD, REGISTER}

    # the newborn matter is not granted to these clients
    _problem(_read(api, holder, access, matter=NEWBORN_MATTER), 403, "matter_not_granted")
    _problem(_read(api, holder, access, matter="NO-SUCH-MATTER"), 422, "invalid_matter")
    missing = api.get(f"/v1/holders/{holder}/licenses", headers=headers(access))
    _problem(missing, 422, "invalid_matter")
    no_case = api.get(
        f"/v1/holders/{holder}/licenses",
        params={"matter": TEST_MATTER},
        headers={"Authorization": f"Bearer {access}"},
    )
    _problem(no_case, 422, "invalid_case_id")
    _problem(_read(api, holder, access, case="a b;DROP"), 422, "invalid_case_id")

    nothing, secret = add_client(sqlite_store, license_types=["marriage_certificate"])
    _problem(_read(api, holder, token(api, nothing, secret)), 403, "license_type_not_granted")


def test_an_ungranted_license_is_indistinguishable_from_none(
    api: TestClient, sqlite_store, make_record, samples
) -> None:
    with_register, without = samples.resident_id(21), samples.resident_id(22)
    sqlite_store.upsert([make_record(21, type_code=REGISTER, type_name="户口簿", number="R21")])
    client_id, secret = add_client(sqlite_store, license_types=["resident_id_card"])
    access = token(api, client_id, secret)
    first, second = _read(api, with_register, access), _read(api, without, access)
    assert first.status_code == second.status_code == 200
    strip = lambda body: {**body, "holder": None}  # noqa: E731 - the IDs differ, nothing else
    assert strip(first.json()) == strip(second.json())
    assert first.headers.keys() == second.headers.keys()

    [stored] = sqlite_store.licenses_for_holder(with_register)
    by_id = api.get(
        f"/v1/licenses/{stored.license_id}", params={"matter": TEST_MATTER}, headers=headers(access)
    )
    unknown = api.get(
        f"/v1/licenses/{LICENSE_ID}", params={"matter": TEST_MATTER}, headers=headers(access)
    )
    assert by_id.status_code == unknown.status_code == 404
    assert by_id.json() == unknown.json()
    verification = api.get(
        f"/v1/licenses/{stored.license_id}/verification",
        params={"matter": TEST_MATTER},
        headers=headers(access),
    )
    assert verification.status_code == 404 and verification.json() == unknown.json()


# -- prefill ------------------------------------------------------------------------------------


def test_prefill_says_what_each_material_needs(
    api: TestClient, sqlite_store, make_record, samples
) -> None:
    holder = samples.resident_id(31)
    sqlite_store.upsert(
        [
            make_record(31, valid_to=dt.date(2001, 1, 1)),  # the ID card expired
            make_record(31, type_code=REGISTER, type_name="户口簿", number="R31"),
        ]
    )
    client_id, secret = add_client(
        sqlite_store, license_types=["resident_id_card", "household_register"]
    )
    access = token(api, client_id, secret)
    response = api.post(
        "/v1/intake/prefill",
        json={"matter": TEST_MATTER, "applicant_id": holder, "case_id": "FS-2026-1"},
        headers={"Authorization": f"Bearer {access}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    outcome = {m["name"]: (m["outcome"], m["reason"]) for m in body["materials"]}
    assert outcome == {
        "居民身份证": ("required", "expired"),
        "居民户口簿": ("satisfied", None),
        "营业执照": ("required", "not_shared"),
        "申请表": ("required", "applicant_provides"),
    }
    register = next(m for m in body["materials"] if m["outcome"] == "satisfied")["license"]
    assert register["type_code"] == REGISTER and register["version"] == 1
    assert (body["materials_total"], body["proofs_eliminated"], body["still_required"]) == (4, 1, 3)
    assert body["applicant"]["id"] != holder and holder not in response.text
    reason = next(m for m in body["materials"] if m["name"] == "申请表")["reason_text"]
    assert reason == "本人签名的申请表"

    sqlite_store.upsert([make_record(31, valid_to=dt.date(2001, 1, 1), status="revoked")])
    again = api.post(
        "/v1/intake/prefill",
        json={"matter": TEST_MATTER, "applicant_id": holder, "case_id": "FS-2026-2"},
        headers={"Authorization": f"Bearer {access}"},
    ).json()
    assert again["materials"][0]["reason"] == "revoked"
    nobody = api.post(
        "/v1/intake/prefill",
        json={"matter": TEST_MATTER, "applicant_id": samples.resident_id(32), "case_id": "X"},
        headers={"Authorization": f"Bearer {access}"},
    ).json()
    assert [m["reason"] for m in nobody["materials"]][:2] == ["no_license", "no_license"]

    bad = api.post(
        "/v1/intake/prefill",
        json={"matter": TEST_MATTER, "applicant_id": holder[:-1] + "0", "case_id": "X"},
        headers={"Authorization": f"Bearer {access}"},
    )
    _problem(bad, 422, "invalid_holder_id")
    assert holder[:-1] not in bad.text
    extra = api.post(
        "/v1/intake/prefill",
        json={"matter": TEST_MATTER, "applicant_id": holder, "case_id": "X", "more": 1},
        headers={"Authorization": f"Bearer {access}"},
    )
    _problem(extra, 422, "invalid_request")


# -- the audit trail and the holder's access log ------------------------------------------------


def test_reads_are_audited_and_the_holder_sees_them(
    api: TestClient, sqlite_store, make_record, samples
) -> None:
    holder = samples.resident_id(41)
    sqlite_store.upsert([make_record(41)])
    client_id, secret = add_client(sqlite_store, name="禅城区政务服务中心")
    access = token(api, client_id, secret)
    body = _read(api, holder, access, case="FS-2026-77").json()
    narrow, narrow_secret = add_client(sqlite_store, matters=[NEWBORN_MATTER])
    _problem(_read(api, holder, token(api, narrow, narrow_secret)), 403, "matter_not_granted")

    with AuditLog(store_url(sqlite_store)) as trail:
        entries = trail.for_holder(holder)
        assert trail.verify().ok
    denied, read = entries
    assert (read.client_id, read.action, read.matter, read.case_id, read.result) == (
        client_id,
        "read",
        TEST_MATTER,
        "FS-2026-77",
        "ok",
    )
    assert list(read.license_ids) == [body["licenses"][0]["license_id"]]
    assert (denied.client_id, denied.result) == (narrow, "denied")
    assert holder not in read.holder_masked

    _problem(
        api.get(f"/v1/holders/{holder}/access-log", headers=headers(access)),
        403,
        "insufficient_scope",
    )
    portal, portal_secret = add_client(
        sqlite_store, kind="portal", matters=[], license_types=[], name="粤省事"
    )
    log = api.get(
        f"/v1/holders/{holder}/access-log",
        headers=headers(token(api, portal, portal_secret), case="portal-session-1"),
    )
    assert log.status_code == 200, log.text
    shown = log.json()
    assert shown["holder"]["id"] != holder and holder not in log.text
    first = next(e for e in shown["entries"] if e["result"] == "ok")
    assert first["client_name"] == "禅城区政务服务中心" and first["matter_name"] == "测试事项"
    assert first["case_id"] == "FS-2026-77"
    with AuditLog(store_url(sqlite_store)) as trail:
        newest = trail.for_holder(holder, limit=1)[0]
    assert (newest.client_id, newest.matter) == (portal, "access-log")


def test_a_read_fails_if_its_audit_entry_cannot_be_written(
    api: TestClient, sqlite_store, make_record, samples
) -> None:
    holder = samples.resident_id(51)
    sqlite_store.upsert([make_record(51)])
    client_id, secret = add_client(sqlite_store)
    access = token(api, client_id, secret)
    with sqlite_store._engine.begin() as conn:  # the trail's table is gone
        conn.exec_driver_sql("ALTER TABLE audit_log RENAME TO audit_log_gone")
    response = _read(api, holder, access)
    _problem(response, 503, "store_unavailable")
    assert "licenses" not in response.json()


# -- rate limits --------------------------------------------------------------------------------


def test_a_client_over_its_rate_limit_gets_429(api: TestClient, sqlite_store, samples) -> None:
    client_id, secret = add_client(sqlite_store, rate_limit=1)
    access = token(api, client_id, secret)
    holder = samples.resident_id(61)
    assert _read(api, holder, access).status_code == 200
    limited = _read(api, holder, access)
    _problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    other, other_secret = add_client(sqlite_store)  # other clients are not slowed
    assert _read(api, holder, token(api, other, other_secret)).status_code == 200
    time.sleep(1.05)
    assert _read(api, holder, access).status_code == 200
