"""Birth certificates served by a department REST API, synced through the rest connector."""

from __future__ import annotations

import pytest

from exchange.config import Deployment
from exchange.demo.rest_simulator import demo_birth_records, start_simulator
from exchange.state import RunStatus
from exchange.sync import RunFailed, SyncContext, sync
from license_store.store import LicenseStore

SOURCE = "chancheng_birth_certificates"


def with_small_pages(deployment: Deployment) -> Deployment:
    """The sample's REST source, with small pages (more requests) and quick retries."""
    data = deployment.model_dump()
    for source in data["sources"]:
        if source["id"] == SOURCE:
            options = source["connector"]["options"]
            options["pagination"]["page_size"] = 100
            options["backoff"] = 0.01
    return Deployment.model_validate(data)


def test_rest_source_syncs_through_faults_and_incrementally(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = demo_birth_records(persons=1500)
    context = SyncContext(deployment=with_small_pages(deployment))
    with start_simulator(
        records, auth="basic", username="chancheng", password="pw-Ch4ncheng"
    ) as sim:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CHANCHENG_BIRTH_API",
            sim.connection_url("chancheng", "pw-Ch4ncheng", auth="basic"),
        )
        sim.set_faults(rate_limited=1, retry_after="0", server_errors=2)
        first = sync(SOURCE, context=context)
        assert first.status is RunStatus.SUCCEEDED
        assert first.rows_read == len(records) == first.rows_loaded + first.rows_quarantined
        with LicenseStore() as store:
            assert store.count() >= len(records)  # mother's copy, and the father's where named

        again = sync(SOURCE, context=context)
        assert again.rows_read <= 3  # only the records at the watermark are read again
        assert (again.licenses_inserted, again.licenses_updated) == (0, 0)
        assert any("updated_since" in r.params for r in sim.data_requests)

        sim.set_faults(server_errors=50)
        with pytest.raises(RunFailed) as info:
            sync(SOURCE, context=context)
        assert not info.value.terminal and "pw-Ch4ncheng" not in str(info.value)
