"""End to end against the real servers: all five sample department systems, synced in full and
then incrementally, with the household registry in PostgreSQL, the marriage registry in MariaDB,
the birth records behind the department's REST API on a loopback port and the business and
real-estate registries as GB18030 CSV and xlsx drops; the license store and the exchange state in
PostgreSQL (the production profile's databases)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from exchange.config import Deployment
from exchange.demo import (
    connection_env,
    dirty_rows,
    generate_department_systems,
    sample_applicant,
    simulate_changes,
    start_department_api,
)
from exchange.demo.schema import spec_for
from exchange.state import RunStatus
from exchange.sync import SyncContext, sync
from license_store.store import LicenseStore
from tests.intake import EVERY_MATTER, intake_client

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]


def count_rows(url: str, source_id: str) -> int:
    table = spec_for(source_id).table
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(table)).scalar_one()
    finally:
        engine.dispose()


def test_all_five_systems_sync_incrementally_from_every_kind_of_source(
    deployment: Deployment,
    postgres_url: str,
    mariadb_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    systems = generate_department_systems(
        tmp_path / "departments",
        databases={"gd_household_db": postgres_url, "foshan_marriage_db": mariadb_url},
        persons=800,
    )
    by_source = {s.source_id: s for s in systems}
    assert make_url(by_source["gd_household_registry"].url).get_backend_name() == "postgresql"
    assert make_url(by_source["foshan_marriage_registry"].url).get_backend_name() == "mysql"
    assert {s.source_id: s.kind for s in systems} == {
        s.id: s.connector.kind for s in deployment.sources
    }
    monkeypatch.setenv("GOVX_LICENSE_DB_URL", postgres_url)
    monkeypatch.setenv("GOVX_EXCHANGE_DB_URL", postgres_url)

    with start_department_api(systems) as api:
        env = connection_env(systems, api_url=api.url)
        assert env["AIRFLOW_CONN_GD_HOUSEHOLD_DB"].startswith("postgres://")
        assert env["AIRFLOW_CONN_FOSHAN_MARRIAGE_DB"].startswith("mysql://")
        assert env["AIRFLOW_CONN_GD_BUSINESS_DROP"].startswith("file:///")
        for key, value in env.items():
            monkeypatch.setenv(key, value)

        runs = {
            s.id: sync(s.id, context=SyncContext(deployment=deployment)) for s in deployment.sources
        }
        for source_id, run in runs.items():
            system = by_source[source_id]
            assert run.status is RunStatus.SUCCEEDED, source_id
            assert run.rows_read == system.rows == run.rows_loaded + run.rows_quarantined
            assert run.rows_quarantined == len(dirty_rows()[source_id]), source_id

        changed = simulate_changes(systems)
        assert all(changed.values()), changed
        for source in deployment.sources:
            again = sync(source.id, context=SyncContext(deployment=deployment))
            # the changed rows, plus the few rows at the old watermark (read again, unchanged);
            # a drop folder delivers exactly the changed rows
            assert changed[source.id] <= again.rows_read <= changed[source.id] + 3, source.id
            assert again.rows_quarantined == 0, source.id  # the dirty rows are not touched
            assert again.licenses_inserted + again.licenses_updated > 0, source.id
        assert api.data_requests[-1].params.get("updated_since")  # incremental over HTTP

    assert count_rows(postgres_url, "gd_household_registry") > 800  # newcomers, newborns
    holder = sample_applicant(systems)
    with LicenseStore() as store, intake_client(store) as (client, headers):
        assert store.url.startswith("postgresql")
        body = client.get(
            f"/v1/holders/{holder}/licenses", params={"matter": EVERY_MATTER}, headers=headers
        ).json()
    assert {"居民身份证", "居民户口簿", "结婚证", "出生医学证明", "不动产权证书"} <= {
        lic["type_name"] for lic in body["licenses"]
    }
