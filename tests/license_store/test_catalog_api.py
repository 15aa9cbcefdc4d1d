"""Readiness and the catalogue endpoints of the license API (real stores, the sample config)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from exchange.config import load_deployment
from license_store.api import create_app
from license_store.store import LicenseStore
from tests.intake import TEST_MATTER, intake_client

CONFIG = Path(__file__).resolve().parents[2] / "config"
UNREACHABLE = "postgresql+psycopg://govx:s3cret@127.0.0.1:1/licenses?connect_timeout=1"


def test_readyz_reports_a_migrated_store_ready(sqlite_store: LicenseStore) -> None:
    with TestClient(create_app(sqlite_store)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"


def test_readyz_is_503_for_an_unmigrated_or_unreachable_store(tmp_path: Path) -> None:
    with LicenseStore(f"sqlite:///{tmp_path / 'empty.db'}") as empty:
        with TestClient(create_app(empty)) as client:
            response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["code"] == "store_not_ready"
        assert "govx db upgrade" in response.json()["detail"]
    with LicenseStore(UNREACHABLE) as gone, TestClient(create_app(gone)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["code"] == "store_unavailable"
    assert "s3cret" not in response.text and "127.0.0.1" not in response.text
    with TestClient(create_app(gone)) as client:  # liveness never touches the store
        assert client.get("/healthz").status_code == 200


def test_catalogues_list_the_license_types_and_matters(sqlite_store: LicenseStore) -> None:
    deployment = load_deployment(CONFIG)
    with intake_client(sqlite_store, deployment) as (client, headers):
        types = client.get("/v1/catalog/license-types", headers=headers).json()
        matters = client.get("/v1/catalog/matters", headers=headers).json()
    assert [t["id"] for t in types] == [t.id for t in deployment.license_types]
    card = next(t for t in types if t["id"] == "resident_id_card")
    assert card["holder_kind"] == "natural" and card["validity"] == "from_source"
    assert card["issuing_department"]["name"] == "广东省公安厅"
    assert {"name": "address", "label": "住址"} in card["face_fields"]
    assert [m["code"] for m in matters] == [m.code for m in deployment.matters]
    for matter, configured in zip(matters, deployment.matters, strict=True):
        assert [x["license_type"] for x in matter["materials"]] == [
            x.license_type for x in configured.materials
        ]
        assert matter["department"]["id"] == configured.department


def test_catalogues_come_from_the_configured_deployment(
    sqlite_store: LicenseStore, monkeypatch
) -> None:
    monkeypatch.setenv("GOVX_CONFIG", str(CONFIG))
    with intake_client(sqlite_store) as (client, headers):
        client.app.state.deployment = None  # as served: loaded from GOVX_CONFIG on first use
        response = client.get("/v1/catalog/matters", headers=headers)
    assert response.status_code == 200 and len(response.json()) == len(
        load_deployment(CONFIG).matters
    )


def test_metrics_count_requests_by_route_template_and_lookups_by_type(
    sqlite_store: LicenseStore, make_record, samples
) -> None:
    holder = samples.resident_id(7)
    sqlite_store.upsert([make_record(7)])
    with intake_client(sqlite_store) as (client, headers):
        read = {"params": {"matter": TEST_MATTER}, "headers": headers}
        assert client.get(f"/v1/holders/{holder}/licenses", **read).json()["count"] == 1
        client.get("/v1/holders/not-an-id/licenses", **read)
        client.get("/no/such/route/440604200501011234")
        text = client.get("/metrics", headers=headers).text
    assert (
        'govx_http_requests_total{method="GET",route="/v1/holders/{holder_id}/licenses",'
        'status="200"} 1.0'
    ) in text
    assert 'route="/v1/holders/{holder_id}/licenses",status="422"} 1.0' in text
    assert 'route="unmatched",status="404"} 1.0' in text
    assert "govx_http_request_duration_seconds_bucket" in text
    assert 'govx_license_lookups_total{license_type="' in text
    assert holder not in text and "440604200501011234" not in text  # no path ever in a label
