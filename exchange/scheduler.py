"""Running the Airflow DAGs from the ``govx`` CLI on the embedded default.

Airflow keeps its metadata in a SQLite file under ``$GOVX_HOME/airflow``; ``airflow dags test``
runs a DAG in-process, no scheduler needed. This module builds that environment and runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from exchange.settings import config_dir, govx_home

__all__ = ["airflow_env", "dags_folder", "migrate_airflow_db", "run_dag_test"]


class AirflowCommandFailed(RuntimeError):
    """An ``airflow`` command exited non-zero; the message has the tail of its output."""


def dags_folder() -> Path:
    """``GOVX_DAGS_FOLDER`` or the repository's ``dags/``."""
    override = os.environ.get("GOVX_DAGS_FOLDER")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "dags"


def airflow_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``airflow`` commands: SQLite metadata under the data directory."""
    home = govx_home()
    env = dict(os.environ)
    env.update(
        {
            "GOVX_HOME": str(home),
            "GOVX_CONFIG": str(config_dir()),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get(
                "AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"
            ),
        }
    )
    env.update(extra or {})
    return env


def _airflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow) if airflow.exists() else "airflow", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise AirflowCommandFailed(
            f"`airflow {' '.join(args)}` exited {result.returncode}:\n{tail}"
        )
    return result


def migrate_airflow_db(env: dict[str, str] | None = None) -> None:
    """Create or upgrade Airflow's metadata database (idempotent)."""
    env = env or airflow_env()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    _airflow("db", "migrate", env=env)


def run_dag_test(dag_id: str, env: dict[str, str] | None = None) -> str:
    """Run one DAG end to end with ``airflow dags test``; returns its output."""
    result = _airflow("dags", "test", dag_id, env=env or airflow_env())
    return result.stdout + result.stderr
