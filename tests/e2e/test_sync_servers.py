"""End to end against the real servers: department systems in PostgreSQL and MariaDB, the license
store and the exchange state in PostgreSQL (the production profile's databases)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from exchange.config import Deployment
from exchange.demo import (
    connection_env,
    generate_department_systems,
    sample_applicant,
    simulate_changes,
)
from exchange.state import RunStatus
from exchange.sync import SyncContext, sync
from license_store.api import create_app
from license_store.store import LicenseStore

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]

CONN_IDS = {
    "gd_household_db": "postgres",
    "foshan_marriage_db": "mariadb",
    "chancheng_birth_db": "postgres",
    "gd_business_db": "mariadb",
    "nanhai_realestate_db": "postgres",
}


def test_sync_from_postgres_and_mariadb_into_a_postgres_store(
    deployment: Deployment,
    postgres_url: str,
    mariadb_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls = {"postgres": postgres_url, "mariadb": mariadb_url}
    systems = generate_department_systems(
        {conn_id: urls[server] for conn_id, server in CONN_IDS.items()}, persons=800
    )
    for key, value in connection_env(systems).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GOVX_LICENSE_DB_URL", postgres_url)
    monkeypatch.setenv("GOVX_EXCHANGE_DB_URL", postgres_url)

    runs = {
        s.id: sync(s.id, context=SyncContext(deployment=deployment)) for s in deployment.sources
    }
    rows = {s.source_id: s.rows for s in systems}
    for source_id, run in runs.items():
        assert run.status is RunStatus.SUCCEEDED, source_id
        assert run.rows_read == rows[source_id] == run.rows_loaded + run.rows_quarantined

    changed = simulate_changes(systems)
    for source in deployment.sources:
        again = sync(source.id, context=SyncContext(deployment=deployment))
        # the changed rows, plus the few rows at the old watermark (read again, unchanged)
        assert changed[source.id] <= again.rows_read <= changed[source.id] + 3, source.id
        assert again.licenses_inserted + again.licenses_updated > 0, source.id

    holder = sample_applicant(systems)
    with LicenseStore() as store, TestClient(create_app(store)) as client:
        assert store.url.startswith("postgresql")
        body = client.get(f"/v1/holders/{holder}/licenses").json()
    assert {"居民身份证", "居民户口簿", "结婚证", "出生医学证明"} <= {
        lic["type_name"] for lic in body["licenses"]
    }
