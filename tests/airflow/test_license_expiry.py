"""The ``license_expiry`` DAG: thin, daily, and its run expires what is due (dag.test())."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from stdnum.cn import ric

from license_store import LicenseRecord, LicenseStore
from license_store.audit import AuditLog

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "license_expiry.py"
pytestmark = pytest.mark.airflow


def test_dag_file_imports_nothing_heavy_at_top_level() -> None:
    text = DAG_FILE.read_text(encoding="utf-8")
    top_level = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    heavy = ("sqlalchemy", "cryptography", "license_store", "exchange", "pyarrow")
    assert not [line for line in top_level if any(h in line for h in heavy)]


def _record(n: int, valid_to: dt.date) -> LicenseRecord:
    first17 = f"44060420000101{n:03d}"
    holder = first17 + ric.calc_check_digit(first17 + "0")
    return LicenseRecord(
        type_code="11440000MB2000000Q001",  # resident_id_card of the sample deployment
        type_name="居民身份证",
        issuer_code="11440000MB2000000Q",  # gd_public_security
        issuer_name="广东省公安厅",
        region_code="440000",
        holder_id=holder,
        holder_kind="natural",
        holder_name=f"测试{n}",
        number=f"ID{n:06d}",
        issue_date=dt.date(2010, 1, 1),
        valid_from=dt.date(2010, 1, 1),
        valid_to=valid_to,
        status="valid",
        face={},
        source_id="gd_household_registry",
        run_id="run-1",
    )


def test_license_expiry_runs_daily_and_expires_what_is_due(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["license_expiry"]
    assert [t.task_id for t in dag.topological_sort()] == ["expire"]
    assert dag.max_active_runs == 1 and not dag.catchup

    due, current = _record(1, dt.date(2020, 1, 1)), _record(2, dt.date(2099, 1, 1))
    with LicenseStore() as store:  # the test's own $GOVX_HOME/licenses.db, as the DAG opens it
        store.upgrade()
        store.upsert([due, current])
    dag_run = dag.test()
    assert str(dag_run.state) in {"success", "DagRunState.SUCCESS"}
    with LicenseStore() as store:
        expired = store.licenses_for_holder(due.holder_id)[0]
        assert (expired.status, expired.version) == ("expired", 2)
        assert store.licenses_for_holder(current.holder_id)[0].version == 1
        assert store.signed_version(expired.license_id).signature is not None
        url = store.url
    [entry] = AuditLog(url).for_holder(due.holder_id)
    assert (entry.client_id, entry.matter) == ("license_expiry", "expiry")
