"""Airflow for the DAG tests: a throw-away AIRFLOW_HOME with a SQLite metadata database.

Airflow reads its configuration when it is first imported, so the environment is set here, when
this folder is collected and before any test module imports Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="govx-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "GOVX_CONFIG": str(REPO / "config"),
    }
)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate Airflow's metadata database once per session (``airflow db migrate``)."""
    airflow = Path(sys.executable).with_name("airflow")
    result = subprocess.run(
        [str(airflow), "db", "migrate"], env=dict(os.environ), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return AIRFLOW_HOME
