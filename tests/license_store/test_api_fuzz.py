"""The license API under generated and hostile input: no 5xx, answers as documented, no raw IDs.

Schemathesis generates requests for every operation of the app's own OpenAPI schema (the ASGI
app in process, a real SQLite store with licenses) and checks each answer: not a server error;
status code, content type, headers and body as the schema documents them; and no unmasked
holder ID in the body. It runs once with a valid bearer token and case id injected and once with
no credentials at all. Bounded: ``MAX_EXAMPLES`` per operation, derandomized (the same examples
every run), no deadline.

The hostile-input test sends SQL metacharacters, overlong values, Unicode tricks (full-width
digits, an RTL override, zero-width characters), NUL and malformed IDs in every parameter of
every route (path, query, ``X-Case-Id``, ``Authorization``, JSON and form bodies) and expects a
4xx that does not repeat the input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from license_store.api import create_app
from license_store.store import LicenseStore
from license_store.tokens import TokenIssuer
from tests.intake import (
    EVERY_MATTER,
    NEWBORN_MATTER,
    TEST_MATTER,
    add_client,
    api_deployment,
    headers,
    token,
)

KEY = b"fuzz-test-token-key-0123456789ab"
MAX_EXAMPLES = 25
CASE = "FUZZ-2026-1"
# an 18-character resident ID, not inside a longer run of digits or letters, not masked, not the
# decimals of a number (the metrics' sums)
RAW_ID = re.compile(r"(?<![0-9A-Za-z*.])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")


def documented_status(ctx: Any, response: Any, case: Any) -> bool | None:
    """``status_code_conformance``: every status answered is documented."""
    return status_code_conformance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    documented_status,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app on a store with a few licenses, an intake and a portal token, the stored IDs.

    The schema's example holder and matter have licenses and a grant, so examples get a 200."""
    from tests.license_store.conftest import resident_id

    holders = (VALID_ID, resident_id(0), resident_id(1))
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'licenses.db'}"
    with LicenseStore(url) as store:
        store.upgrade()
        store.upsert([_record(holder) for holder in holders])
        intake_id, intake_secret = add_client(
            store, matters=(TEST_MATTER, EVERY_MATTER, NEWBORN_MATTER)
        )
        portal_id, portal_secret = add_client(
            store, kind="portal", matters=[], license_types=[], name="粤省事"
        )
        monitor_id, monitor_secret = add_client(
            store, kind="monitor", matters=[], license_types=[], name="Prometheus"
        )
        app = create_app(store, api_deployment(), tokens=TokenIssuer(KEY))
        with TestClient(app) as client:
            yield {
                "app": app,
                "store": store,
                "client": client,
                "intake": headers(token(client, intake_id, intake_secret), CASE),
                "portal": headers(token(client, portal_id, portal_secret), CASE),
                "monitor": headers(token(client, monitor_id, monitor_secret), CASE),
                "secrets": (intake_secret, portal_secret, monitor_secret),
                "holders": holders,
            }


def _record(holder: str) -> Any:
    import datetime as dt

    from license_store import LicenseRecord

    return LicenseRecord(
        type_code="11440000MB2000000Q001",
        type_name="居民身份证",
        issuer_code="11440604MB2C000125",
        issuer_name="佛山市公安局禅城分局",
        region_code="440604",
        holder_id=holder,
        holder_kind="natural",
        holder_name="测试",
        number="SFZ" + holder[-6:],
        issue_date=dt.date(2024, 3, 1),
        valid_from=dt.date(2024, 3, 1),
        valid_to=None,
        status="valid",
        face={"address": "广东省佛山市禅城区祖庙路1号"},
        source_id="fuzz",
        run_id="run-1",
    )


def _unmasked_ids(body: str, known: tuple[str, ...]) -> list[str]:
    """Holder IDs in a response body that are not masked (a verification bundle's signed
    content is the one place an unmasked ID belongs, so it is left out)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("bundle"), dict):
        data = {**data, "bundle": {**data["bundle"], "content": None}}
        body = json.dumps(data, ensure_ascii=False)
    return RAW_ID.findall(body) + [holder for holder in known if holder in body]


def no_unmasked_holder_id(known: tuple[str, ...]) -> Any:
    """A schemathesis check: the body holds no unmasked 18-character ID, none of ``known``."""

    def check(ctx: Any, response: Any, case: Any) -> bool | None:
        found = _unmasked_ids(response.text, known)
        if found:
            raise AssertionError(f"unmasked holder ID in the {response.status_code} answer")
        return None

    return check


def _documented_schema() -> dict[str, Any]:
    """The app's OpenAPI document (building the app opens nothing; the tests call the one on
    the ``fuzzed`` store). ``schemathesis.pytest.from_fixture`` would load it from the fixture,
    but schemathesis 4.32 sets ``request.node._nodeid``, which pytest 9 no longer has."""
    app: FastAPI = create_app(None, api_deployment())
    return app.openapi()


TOKEN_PATH = "/v1/oauth/token"
schema = schemathesis.openapi.from_dict(_documented_schema())
# the token endpoint's 422 is documented as FastAPI's default (application/json,
# HTTPValidationError) but answered as a problem document: see test_token_422_is_documented_...
token_endpoint = schema.include(path=TOKEN_PATH)
TOKEN_CHECKS = [not_a_server_error, status_code_conformance, response_headers_conformance]


def _authorized(fuzzed: dict[str, Any], path: str) -> dict[str, str]:
    """The headers of the client kind the route is for."""
    if path == "/metrics":
        return fuzzed["monitor"]
    return fuzzed["portal" if path.endswith("/access-log") else "intake"]


@schema.exclude(path=TOKEN_PATH).parametrize()
@FUZZ_SETTINGS
def test_api_conforms_with_a_valid_token(case: Any, fuzzed: dict[str, Any]) -> None:
    response = case.call_and_validate(
        app=fuzzed["app"],
        headers=_authorized(fuzzed, case.operation.path),
        checks=[*CHECKS, no_unmasked_holder_id(fuzzed["holders"])],
    )
    for secret in fuzzed["secrets"]:
        assert secret not in response.text


@schema.exclude(path=TOKEN_PATH).parametrize()
@FUZZ_SETTINGS
def test_api_conforms_without_credentials(case: Any, fuzzed: dict[str, Any]) -> None:
    if case.headers:
        case.headers.pop("authorization", None)
        case.headers.pop("Authorization", None)
    response = case.call_and_validate(
        app=fuzzed["app"], checks=[*CHECKS, no_unmasked_holder_id(fuzzed["holders"])]
    )
    if case.operation.path not in {"/healthz", "/readyz", "/v1/oauth/token"}:
        assert response.status_code in (401, 405), response.text  # 405: a method not served


@token_endpoint.parametrize()
@FUZZ_SETTINGS
def test_token_endpoint_never_fails_or_leaks(case: Any, fuzzed: dict[str, Any]) -> None:
    response = case.call_and_validate(
        app=fuzzed["app"], checks=[*TOKEN_CHECKS, no_unmasked_holder_id(fuzzed["holders"])]
    )
    for secret in fuzzed["secrets"]:
        assert secret not in response.text


def test_stored_licenses_are_answered_as_documented(fuzzed: dict[str, Any]) -> None:
    """Generated license ids never name a stored license, so the 200 answers of every read are
    checked here too, with a stored holder and license."""
    [stored] = fuzzed["store"].licenses_for_holder(VALID_ID)
    by_license = {"path_parameters": {"license_id": stored.license_id}}
    read = {"query": {"matter": NEWBORN_MATTER}}
    calls = {
        ("/v1/holders/{holder_id}/licenses", "GET"): {
            "path_parameters": {"holder_id": VALID_ID},
            **read,
        },
        ("/v1/licenses/{license_id}", "GET"): {**by_license, **read},
        ("/v1/licenses/{license_id}/verification", "GET"): {**by_license, **read},
        ("/v1/intake/prefill", "POST"): {
            "body": {"matter": NEWBORN_MATTER, "applicant_id": VALID_ID, "case_id": CASE},
            "media_type": "application/json",
        },
        ("/v1/holders/{holder_id}/access-log", "GET"): {
            "path_parameters": {"holder_id": VALID_ID},
            "query": {"limit": 5},
        },
        ("/metrics", "GET"): {},
    }
    for (path, method), parts in calls.items():
        case = schema[path][method].Case(**parts)
        response = case.call_and_validate(
            app=fuzzed["app"],
            headers=_authorized(fuzzed, path),
            checks=[*CHECKS, no_unmasked_holder_id(fuzzed["holders"])],
        )
        assert response.status_code == 200, (path, response.text)


def test_the_documented_example_license_id_is_valid(fuzzed: dict[str, Any]) -> None:
    operation = fuzzed["app"].openapi()["paths"]["/v1/licenses/{license_id}"]["get"]
    [example] = [p for p in operation["parameters"] if p["name"] == "license_id"]
    response = fuzzed["client"].get(
        f"/v1/licenses/{example['schema']['examples'][0]}",
        params={"matter": NEWBORN_MATTER},
        headers=fuzzed["intake"],
    )
    assert response.json()["code"] != "invalid_license_id", response.text


def test_token_422_is_documented_as_the_problem_document_it_is(fuzzed: dict[str, Any]) -> None:
    response = fuzzed["client"].post(TOKEN_PATH, data={})
    assert response.status_code == 422
    documented = fuzzed["app"].openapi()["paths"][TOKEN_PATH]["post"]["responses"]["422"]
    assert response.headers["content-type"] in documented["content"], documented


def test_an_unparsable_body_gets_a_documented_status(fuzzed: dict[str, Any]) -> None:
    response = fuzzed["client"].post(
        "/v1/intake/prefill",
        content=b"\xff\x79\xfe",
        headers={**fuzzed["intake"], "Content-Type": "application/json"},
    )
    documented = fuzzed["app"].openapi()["paths"]["/v1/intake/prefill"]["post"]["responses"]
    assert str(response.status_code) in documented, response.text
    assert response.json()["code"] == "invalid_request" and response.json()["field"] == "body"


# -- hostile input in every parameter -----------------------------------------------------------

VALID_ID = "11010519491231002X"
HOSTILE = {
    "sql quote": "' OR '1'='1' --",
    "sql statement": "1; DROP TABLE licenses; --",
    "sql wildcard": "%_%' UNION SELECT holder_id FROM licenses --",
    "overlong": "4" * 5000,
    "overlong id": VALID_ID * 40,
    "full-width digits": "".join(chr(ord(c) + 0xFEE0) for c in VALID_ID),
    "mathematical digits": "".join(chr(0x1D7CE + int(c)) if c.isdigit() else c for c in VALID_ID),
    "rtl override": "\u202e" + VALID_ID[::-1],
    "zero-width space": VALID_ID[:6] + "\u200b" + VALID_ID[6:],
    "nul": VALID_ID[:9] + "\x00" + VALID_ID[9:],
    "bad check digit": "110105194912310021",
    "too short": "11010519491231",
    "path traversal": "../../../etc/passwd",
    "markup": "<script>alert(1)</script>",
    "format string": "%s%s%n{0}${jndi:ldap://x/a}",
    "emoji": "🙂" * 20,
}
WELL_FORMED_CASE_IDS = {"bad check digit", "too short"}
READ = {"matter": "query", "X-Case-Id": "header", "Authorization": "auth"}
ROUTES = {
    # name: (method, path template, parameters: name -> where it goes)
    "holder licenses": ("GET", "/v1/holders/{holder_id}/licenses", {"holder_id": "path", **READ}),
    "license": ("GET", "/v1/licenses/{license_id}", {"license_id": "path", **READ}),
    "verification": (
        "GET",
        "/v1/licenses/{license_id}/verification",
        {"license_id": "path", **READ},
    ),
    "prefill": (
        "POST",
        "/v1/intake/prefill",
        {"matter": "json", "applicant_id": "json", "case_id": "json", "Authorization": "auth"},
    ),
    "access log": (
        "GET",
        "/v1/holders/{holder_id}/access-log",
        {"holder_id": "path", "limit": "query", "X-Case-Id": "header", "Authorization": "auth"},
    ),
    "token": (
        "POST",
        TOKEN_PATH,
        {"grant_type": "form", "client_id": "form", "client_secret": "form", "scope": "form"},
    ),
    **{
        name: ("GET", path, {"Authorization": "auth"})
        for name, path in (
            ("license types", "/v1/catalog/license-types"),
            ("matters", "/v1/catalog/matters"),
            ("metrics", "/metrics"),
        )
    },
}
GOOD = {
    "holder_id": VALID_ID,
    "license_id": "1.2.156.3005.2.11440000MB2000000Q001.11440000MB2000000Q.20240000001.001.5",
    "matter": TEST_MATTER,
    "applicant_id": VALID_ID,
    "case_id": CASE,
    "limit": "10",
    "grant_type": "client_credentials",
    "client_id": "nobody",
    "client_secret": "not-the-secret",
    "scope": "licenses:read",
}


def _hostile_cases() -> Iterator[Any]:
    for route, (_method, _path, parameters) in ROUTES.items():
        for parameter, where in parameters.items():
            for name, value in HOSTILE.items():
                if name in WELL_FORMED_CASE_IDS and parameter in ("X-Case-Id", "case_id"):
                    continue  # digits make a valid case reference
                yield pytest.param(route, parameter, where, value, id=f"{route}-{parameter}-{name}")


def _header_value(value: str) -> bytes:
    """Header values go out as the bytes given (UTF-8): what a hostile client could send."""
    return value.encode("utf-8")


@pytest.mark.parametrize(("route", "parameter", "where", "value"), list(_hostile_cases()))
def test_hostile_input_in_every_parameter_gets_a_4xx_without_echo(
    fuzzed: dict[str, Any], route: str, parameter: str, where: str, value: str
) -> None:
    method, template, parameters = ROUTES[route]
    portal = route in {"access log", "metrics"}
    sent: dict[str, Any] = {k: v for k, v in fuzzed["portal" if portal else "intake"].items()}
    values = {name: GOOD.get(name, "") for name in parameters if name in GOOD}
    if where == "auth":
        sent["Authorization"] = "Bearer " + value
    elif where == "header":
        sent[parameter] = value
    else:
        values[parameter] = value
    path = template.format(
        **{name: quote(values[name], safe="") for name in parameters if parameters[name] == "path"}
    )
    query = {name: values[name] for name in parameters if parameters[name] == "query"}
    body = {name: values[name] for name in parameters if parameters[name] in ("json", "form")}
    if route == "prefill" and parameter == "case_id":
        sent.pop("X-Case-Id", None)
    raw_headers = [(k.encode("latin-1"), _header_value(v)) for k, v in sent.items()]
    try:
        response = fuzzed["client"].request(
            method,
            path,
            params=query,
            headers=raw_headers,
            json=body if any(parameters[n] == "json" for n in body) else None,
            data=body if any(parameters[n] == "form" for n in body) else None,
        )
    except (ValueError, UnicodeError) as refused:  # the HTTP client itself refuses to send it
        pytest.skip(f"not sendable: {type(refused).__name__}")
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json")
    if len(value) >= 8:
        assert value not in response.text, "the raw input was echoed"
    assert VALID_ID not in response.text and VALID_ID[::-1] not in response.text
    assert not _unmasked_ids(response.text, fuzzed["holders"])
