"""The intake HTTP API through FastAPI's TestClient, on real stores."""

from __future__ import annotations

import datetime as dt
import logging
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from stdnum.cn import ric

from exchange.standards import format_license_id
from license_store import License, LicenseStore
from license_store.api import create_app
from license_store.intake import HolderLicenses
from license_store.problems import PROBLEM_JSON
from license_store.tokens import TokenIssuer
from tests.intake import TEST_MATTER, add_client, api_deployment, headers, intake_client, token

UNREACHABLE = "postgresql+psycopg://govx:s3cret-pw@127.0.0.1:1/licenses?connect_timeout=2"


def _with_check(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")


INVALID_HOLDER_IDS = {
    "too_short": "1101051949123100",
    "too_long": "11010519491231002X1",
    "bad_check_character": "110105194912310021",
    "bad_birth_date": _with_check("11010519491331002"),
    "birth_in_future": _with_check("44060421990101001"),
    "bad_credit_code_check": "91110000600037341M",
    "garbage": "abc",
    "sql_quote": "1' OR '1'='1",
    "sql_statement": "'; DROP TABLE licenses;--",
    "very_long": "4406041990010112" * 400,
    "unicode": "身份证号码四四零六零四一九九零零一零一",
    "nul_byte": "11010519491231002\x00",
}


MATTER = {"matter": TEST_MATTER}


class Api:
    """A TestClient and the headers of a client granted the test matter's license types."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    def get(self, path: str, **kwargs):
        kwargs.setdefault("params", MATTER)
        return self.client.get(path, headers=self.headers, **kwargs)


@pytest.fixture
def client(sqlite_store: LicenseStore) -> Iterator[Api]:
    with intake_client(sqlite_store) as (test_client, headers):
        yield Api(test_client, headers)


def _assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    assert body["title"] and body["detail"]
    return body


def test_healthz(client: Api) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_holder_licenses(store: LicenseStore, make_record, samples, caplog) -> None:
    holder = samples.resident_id(1)
    store.upsert(
        [
            make_record(1, number="HK1", valid_to=dt.date(2000, 1, 1)),
            make_record(1, type_code=samples.marriage_type, type_name="结婚证", number="J1"),
            make_record(2),
        ]
    )
    caplog.set_level(logging.INFO, logger="govexchange.api")
    with intake_client(store) as (client, headers):
        response = client.get(
            f"/v1/holders/{holder.lower()}/licenses", params=MATTER, headers=headers
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["holder"] == {"id": holder[:4] + "*" * 10 + holder[-4:], "kind": "natural"}
    assert body["matter"] == {"code": TEST_MATTER, "name": "测试事项"}
    assert body["count"] == 2
    assert body["answered_by"] is None  # the API runs without a node identity
    assert "X-Govx-Answered-By" not in response.headers
    first, second = body["licenses"]
    assert first["type_code"] == samples.household_type
    assert first["status"] == "expired"  # valid_to has passed
    assert first["issuer"] == {"code": samples.public_security, "name": "佛山市公安局禅城分局"}
    assert first["holder_code_type"] == "111"
    assert first["issue_date"] == "2024-03-01"
    assert first["valid_to"] == "2000-01-01"
    assert first["face"]["relation"] == "户主"
    assert first["version"] == 1
    assert set(first) == {
        "license_id",
        "type_code",
        "type_name",
        "number",
        "issuer",
        "region_code",
        "holder_name",
        "holder_code_type",
        "issue_date",
        "valid_from",
        "valid_to",
        "status",
        "version",
        "face",
    }
    assert second["type_name"] == "结婚证"  # the test's name for the …Q002 type
    # the route serialises without its models: the bytes are the documented model's
    assert HolderLicenses.model_validate_json(response.content).model_dump_json() == response.text
    assert holder not in response.text
    assert holder not in caplog.text
    assert body["holder"]["id"] in caplog.text


def test_legal_person(client: Api, sqlite_store: LicenseStore, make_record, samples) -> None:
    sqlite_store.upsert(
        [make_record(0, holder_id=samples.company, type_code=samples.business_type)]
    )
    body = client.get(f"/v1/holders/{samples.company}/licenses").json()
    assert body["holder"]["kind"] == "legal"
    assert body["licenses"][0]["holder_code_type"] == "001"


def test_unknown_holder_is_an_empty_list(client: Api, samples) -> None:
    response = client.get(f"/v1/holders/{samples.resident_id(77)}/licenses")
    assert response.status_code == 200
    assert response.json()["count"] == 0
    assert response.json()["licenses"] == []


@pytest.mark.parametrize("raw", INVALID_HOLDER_IDS.values(), ids=INVALID_HOLDER_IDS.keys())
def test_invalid_holder_id_is_a_422_problem_without_the_id(
    raw: str, caplog, tmp_path: Path
) -> None:
    # The store's lookup fails: a 422 proves the ID was checked before the store was touched.
    caplog.set_level(logging.INFO, logger="govexchange.api")
    with _BrokenStore(f"sqlite:///{tmp_path / 'l.db'}") as store:
        store.upgrade()
        with intake_client(store) as (client, headers):
            response = client.get(
                f"/v1/holders/{quote(raw, safe='')}/licenses", params=MATTER, headers=headers
            )
    body = _assert_problem(response, 422, "invalid_holder_id")
    assert body["field"] == "holder_id"
    assert body["detail"].startswith("not a resident ID or credit code")
    assert raw not in response.text
    assert raw.strip().upper() not in response.text
    assert raw not in caplog.text
    assert len(response.text) < 1_000  # a long input is not echoed back


def test_invalid_holder_reasons_are_specific(client: Api) -> None:
    def detail(raw: str) -> str:
        return client.get(f"/v1/holders/{raw}/licenses").json()["detail"]

    assert "wrong length" in detail(INVALID_HOLDER_IDS["too_short"])
    assert "bad check character" in detail(INVALID_HOLDER_IDS["bad_check_character"])
    assert "bad birth date" in detail(INVALID_HOLDER_IDS["bad_birth_date"])


def test_license_by_identifier(client: Api, sqlite_store: LicenseStore, make_record) -> None:
    record = make_record(3)
    sqlite_store.upsert([record])
    first: License = sqlite_store.licenses_for_holder(record.holder_id)[0]
    sqlite_store.upsert([make_record(3, holder_name="改名")])

    response = client.get(f"/v1/licenses/{first.license_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2
    assert body["holder_name"] == "改名"
    assert body["license_id"].split(".")[-2] == "002"
    assert record.holder_id not in response.text


def test_license_not_found_is_a_404_problem(client: Api) -> None:
    unknown = format_license_id("11440000MB2000000Q001", "11440604MB2C00012P", "20240000042", 1)
    body = _assert_problem(client.get(f"/v1/licenses/{unknown}"), 404, "license_not_found")
    assert body["detail"] == "no license has this identifier"


@pytest.mark.parametrize(
    ("license_id", "reason"),
    [
        ("abc", "must start with"),
        ("1.2.156.3005.2.A.B.C", "five parts"),
        ("1.2.156.3005.2.11440000MB2000000Q001.11440604MB2C00012P.20240000042.001.Z", "check"),
    ],
)
def test_malformed_license_id_is_a_422_problem(client: Api, license_id: str, reason: str) -> None:
    body = _assert_problem(client.get(f"/v1/licenses/{license_id}"), 422, "invalid_license_id")
    assert reason in body["detail"]
    assert body["field"] == "license_id"


def test_unavailable_store_is_a_503_problem_without_internals(samples) -> None:
    issuer = TokenIssuer(b"k" * 32)
    with LicenseStore(UNREACHABLE) as store:
        app = create_app(store, api_deployment(), tokens=issuer)
        with TestClient(app) as client:
            response = client.get(
                f"/v1/holders/{samples.resident_id(1)}/licenses",
                params=MATTER,
                headers={"Authorization": "Bearer x.y.z", "X-Case-Id": "C-1"},
            )
            _assert_problem(response, 401, "invalid_token")  # a bad token: no store needed
            response = client.post(
                "/v1/oauth/token",
                data={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"},
            )
    _assert_problem(response, 503, "store_unavailable")
    assert response.headers["retry-after"]
    assert "s3cret" not in response.text
    assert "127.0.0.1" not in response.text


def test_unmigrated_store_is_a_503_problem(tmp_path: Path, samples) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with LicenseStore(url) as migrated:
        migrated.upgrade()
        with intake_client(migrated) as (_, headers):
            pass
    with sqlite3.connect(tmp_path / "l.db") as raw:  # as if a newer release had migrated it
        raw.execute("UPDATE alembic_version_license_store SET version_num = '9999'")
    with LicenseStore(url) as store, TestClient(create_app(store, api_deployment())) as client:
        response = client.get(
            f"/v1/holders/{samples.resident_id(1)}/licenses", params=MATTER, headers=headers
        )
    _assert_problem(response, 503, "store_not_ready")


class _BrokenStore(LicenseStore):
    """A real store whose lookup fails in a way nobody planned for."""

    def licenses_for_holder(self, holder_id: str) -> list[License]:
        raise RuntimeError(f"internal detail for {holder_id}")

    def licenses_for_holders(self, holder_ids: Sequence[str]) -> dict[str, list[License]]:
        raise RuntimeError(f"internal detail for {holder_ids[0]}")  # the API's batched read


def test_unexpected_error_is_a_500_problem_without_internals(tmp_path: Path, samples) -> None:
    holder = samples.resident_id(1)
    with _BrokenStore(f"sqlite:///{tmp_path / 'l.db'}") as store:
        store.upgrade()
        with intake_client(store, raise_server_exceptions=False) as (client, headers):
            response = client.get(f"/v1/holders/{holder}/licenses", params=MATTER, headers=headers)
    _assert_problem(response, 500, "internal_error")
    assert "internal detail" not in response.text
    assert holder not in response.text


def test_request_validation_errors_are_problems(sqlite_store: LicenseStore) -> None:
    app = create_app(sqlite_store)

    @app.get("/v1/probe")
    def probe(limit: int) -> dict[str, int]:
        return {"limit": limit}

    with TestClient(app) as client:
        response = client.get("/v1/probe", params={"limit": "11010519491231002X"})
    body = _assert_problem(response, 422, "invalid_request")
    assert body["field"] == "limit"
    assert "11010519491231002X" not in response.text


def test_unknown_route_is_a_404_problem(client: Api) -> None:
    _assert_problem(client.get("/v1/nothing-here"), 404, "not_found")


def test_openapi_documents_routes_models_and_problems(client: Api) -> None:
    spec = client.get("/openapi.json").json()
    holder_route = spec["paths"]["/v1/holders/{holder_id}/licenses"]["get"]
    assert holder_route["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HolderLicenses"
    }
    assert PROBLEM_JSON in holder_route["responses"]["422"]["content"]
    assert "404" in spec["paths"]["/v1/licenses/{license_id}"]["get"]["responses"]
    schemas = spec["components"]["schemas"]
    assert {"HolderLicenses", "LicenseOut", "Problem"} <= set(schemas)
    assert schemas["HolderLicenses"]["examples"][0]["licenses"][0]["status"] == "valid"
    assert client.get("/docs").status_code == 200


def test_docs_pages_need_no_network(client: Api) -> None:
    """Swagger UI and ReDoc load their scripts and styles from the app itself, not a CDN."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, page
        for asset in assets:
            assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
            assert client.get(asset).status_code == 200, asset


def test_app_without_a_store_opens_the_configured_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_record, samples
) -> None:
    url = f"sqlite:///{tmp_path / 'configured.db'}"
    with LicenseStore(url) as seeded:
        seeded.upgrade()
        seeded.upsert([make_record(4)])
        client_id, secret = add_client(seeded)
    monkeypatch.setenv("GOVX_LICENSE_DB_URL", url)
    app = create_app(deployment=api_deployment())
    with TestClient(app) as client:
        access = token(client, client_id, secret)
        body = client.get(
            f"/v1/holders/{samples.resident_id(4)}/licenses", params=MATTER, headers=headers(access)
        ).json()
        assert body["count"] == 1
    assert app.state.store is None  # closed at shutdown
