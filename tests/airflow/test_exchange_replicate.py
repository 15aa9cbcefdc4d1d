"""The ``exchange_replicate`` DAG: thin, and its run delivers a county's outbox to a real city
node (``govx serve`` in its own process and ``$GOVX_HOME``) via ``dag.test()``."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from stdnum.cn import ric, uscc

from exchange.config import load_deployment
from exchange.node_client import save_parent_credentials
from exchange.nodes import init_node, trust_node
from license_store import LicenseRecord, LicenseStore
from license_store.clients import ClientRegistry
from license_store.models import licenses
from license_store.replication import backlog
from license_store.signing import KeyRing
from tests.servers import start_govx_serve

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "exchange_replicate.py"
pytestmark = pytest.mark.airflow


def test_dag_file_imports_nothing_heavy_at_top_level() -> None:
    text = DAG_FILE.read_text(encoding="utf-8")
    top_level = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    heavy = ("sqlalchemy", "cryptography", "license_store", "exchange", "pyarrow", "requests")
    assert not [line for line in top_level if any(h in line for h in heavy)]


def _record(n: int) -> LicenseRecord:
    first17 = f"44060420050101{n:03d}"
    issuer = "11440604MB2C00012"
    return LicenseRecord(
        type_code="11440000MB2000000Q001",
        type_name="居民户口簿",
        issuer_code=issuer + uscc.calc_check_digit(issuer),
        issuer_name="佛山市公安局禅城分局",
        region_code="440604",
        holder_id=first17 + ric.calc_check_digit(first17 + "0"),
        holder_kind="natural",
        holder_name=f"测试{n}",
        number=f"HK{n:06d}",
        issue_date=dt.date(2020, 1, 1),
        valid_from=dt.date(2020, 1, 1),
        valid_to=None,
        status="valid",
        face={},
        source_id="fs_household",
        run_id="run-1",
    )


def _rows(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.select(licenses.c.license_id, licenses.c.holder_name)).all()
    engine.dispose()
    return sorted(tuple(row) for row in found)


def test_the_dag_skips_where_there_is_no_parent(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["exchange_replicate"]
    assert [t.task_id for t in dag.topological_sort()] == ["push"]
    assert dag.max_active_runs == 1 and not dag.catchup
    run = dag.test()  # this deployment is not a node
    (instance,) = run.get_task_instances()
    assert str(instance.state) in {"skipped", "TaskInstanceState.SKIPPED"}


def test_a_dag_run_delivers_the_outbox_to_the_parent_node(
    airflow_db: Path, isolated_govx_home: Path, tmp_path: Path
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    deployment = load_deployment(REPO / "config")
    city_home = tmp_path / "city"
    city_url = f"sqlite:///{city_home / 'licenses.db'}"
    init_node(city_home, deployment, "440600", parent_url="http://127.0.0.1:9")
    with LicenseStore(city_url) as city:
        city.upgrade()
    with ClientRegistry(city_url) as registry:
        client, secret = registry.add(name="禅城区节点", kind="node", region="440604")
    env = {**os.environ, "GOVX_HOME": str(city_home)}
    log_path = tmp_path / "city.log"
    with log_path.open("w") as log:
        base, server = start_govx_serve(env, log, log_path)
        try:
            county = init_node(isolated_govx_home, deployment, "440604", parent_url=base)
            public = KeyRing(isolated_govx_home / "keys").public_path(county.key_name)
            trust_node(city_home, "440604", public.read_bytes())
            save_parent_credentials(isolated_govx_home, client.client_id, secret)
            with LicenseStore() as store:  # the county's, under $GOVX_HOME as the DAG opens it
                store.upgrade()
                store.upsert([_record(n) for n in range(12)])
                county_url = store._engine.url.render_as_string(hide_password=False)

            dag = DagBag(dag_folder=str(DAG_FILE)).dags["exchange_replicate"]
            run = dag.test()
            assert str(run.state) in {"success", "DagRunState.SUCCESS"}
            assert _rows(city_url) == _rows(county_url) and len(_rows(city_url)) == 12
            with LicenseStore() as store:
                assert backlog(store).packages == 0

            server.terminate()  # the parent goes down: the run fails, the package waits
            server.wait(timeout=20)
            with LicenseStore() as store:
                store.upsert([_record(n) for n in range(12, 15)])
            dag.get_task("push").retries = 0  # dag.test() would wait out the retry delays
            run = dag.test()
            assert str(run.state) in {"failed", "DagRunState.FAILED"}
            with LicenseStore() as store:
                assert backlog(store).packages == 1
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
