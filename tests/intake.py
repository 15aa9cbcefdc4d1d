"""Helpers of the intake API tests: a deployment with a test matter, clients and their tokens.

The store tests' records use the license type codes ``…Q001`` (resident ID card in the sample
config), ``…Q002`` (household register) and ``…Q003`` (a test business license added here);
``TEST_MATTER`` lists all three plus a material the applicant provides; ``EVERY_MATTER`` lists
every license type. Clients are granted both unless a test says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from exchange.config import Deployment, load_deployment
from license_store.api import create_app
from license_store.clients import ClientRegistry
from license_store.store import LicenseStore

CONFIG = Path(__file__).resolve().parents[1] / "config"
TEST_MATTER = "TEST-ALL-001"
NEWBORN_MATTER = "11440600MB20125487-XSE-001"
EVERY_MATTER = "TEST-EVERY-001"  # lists every license type of the deployment
TEST_TYPES = ("resident_id_card", "household_register", "test_business")
ALL_TYPES = (
    "resident_id_card",
    "household_register",
    "marriage_certificate",
    "birth_medical_certificate",
    "business_license",
    "real_estate_certificate",
    "test_business",
)


def api_deployment() -> Deployment:
    """The sample deployment plus a test license type (code ``…Q003``) and ``TEST_MATTER``."""
    data: dict[str, Any] = load_deployment(CONFIG).model_dump(mode="json")
    data["license_types"].append(
        {
            "id": "test_business",
            "code": "11440000MB2000000Q003",
            "name": "营业执照（测试）",
            "holder_kind": "legal",
            "issuing_department": "gd_market_regulation",
            "sharing": "unconditional",
        }
    )
    data["matters"].append(
        {
            "code": TEST_MATTER,
            "name": "测试事项",
            "department": "gd_public_security",
            "materials": [
                {"name": "居民身份证", "license_type": "resident_id_card"},
                {"name": "居民户口簿", "license_type": "household_register"},
                {"name": "营业执照", "license_type": "test_business"},
                {"name": "申请表", "applicant_provides": True, "reason": "本人签名的申请表"},
            ],
        }
    )
    data["matters"].append(
        {
            "code": EVERY_MATTER,
            "name": "测试事项（全部证照）",
            "department": "gd_public_security",
            "materials": [
                {"name": item["name"], "license_type": item["id"]} for item in data["license_types"]
            ],
        }
    )
    return Deployment.model_validate(data)


def store_url(store: LicenseStore) -> str:
    """The store's URL with its password (for the registry beside it)."""
    return store._engine.url.render_as_string(hide_password=False)


def add_client(
    store: LicenseStore,
    *,
    matters: Sequence[str] = (TEST_MATTER, EVERY_MATTER),
    license_types: Sequence[str] = ALL_TYPES,
    kind: str = "intake",
    scopes: Sequence[str] | None = None,
    rate_limit: float | None = None,
    client_id: str | None = None,
    name: str = "测试受理系统",
) -> tuple[str, str]:
    """Register a client in the store's database; its id and secret."""
    with ClientRegistry(store_url(store)) as registry:
        client, secret = registry.add(
            name=name,
            kind=kind,
            matters=matters,
            license_types=license_types,
            scopes=scopes,
            rate_limit=rate_limit,
            client_id=client_id,
        )
    return client.client_id, secret


def token(client: TestClient, client_id: str, secret: str, scope: str | None = None) -> str:
    """A bearer token from the token endpoint (asserts it was issued)."""
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    if scope is not None:
        form["scope"] = scope
    response = client.post("/v1/oauth/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def headers(access_token: str, case: str = "CASE-2026-0001") -> dict[str, str]:
    """Request headers of an authenticated read for ``case``."""
    return {"Authorization": f"Bearer {access_token}", "X-Case-Id": case}


@contextmanager
def intake_client(
    store: LicenseStore,
    deployment: Deployment | None = None,
    *,
    scopes: Sequence[str] = ("licenses:read", "catalog:read", "metrics:read"),
    raise_server_exceptions: bool = True,
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A TestClient on the API and the headers of a client granted every test matter and type."""
    client_id, secret = add_client(store, scopes=scopes)
    app = create_app(store, deployment or api_deployment())
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client, headers(token(client, client_id, secret))
