"""What the exchange asks of Airflow: its environment on the embedded default, and the pools.

Airflow keeps its metadata in a SQLite file under ``$GOVX_HOME/airflow``; ``airflow dags test``
runs a DAG in-process, no scheduler needed. This module builds that environment and runs it.

Every department system (a source's ``connection``) gets an Airflow pool, ``dept__<connection>``:
the ``land`` tasks, the only ones that read the department's system, run in it, so the sync,
snapshot and backfill runs of all the sources on one system never query it more often at once
than the pool has slots (:data:`DEFAULT_POOL_SLOTS`, or ``GOVX_DEPARTMENT_POOL_SLOTS``).
:func:`create_missing_pools` creates the pools Airflow does not have yet and leaves the slots
of existing ones, which operators size in Airflow, alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.settings import config_dir, govx_home

if TYPE_CHECKING:
    from exchange.config import Deployment

__all__ = [
    "DEFAULT_POOL_SLOTS",
    "DepartmentPool",
    "airflow_env",
    "create_missing_pools",
    "dags_folder",
    "department_pools",
    "migrate_airflow_db",
    "pool_name",
    "run_dag_test",
]

POOL_PREFIX = "dept__"
DEFAULT_POOL_SLOTS = 1  # one extraction at a time per department system


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


@dataclass(frozen=True)
class DepartmentPool:
    """The Airflow pool of one department system and the sources that read it."""

    name: str
    slots: int
    department: str
    connection: str
    sources: tuple[str, ...]

    @property
    def description(self) -> str:
        dags = ", ".join(self.sources)
        return f"{self.department}: system {self.connection} (land tasks of {dags})"


def pool_name(connection_id: str) -> str:
    """The Airflow pool of a department system: ``dept__<connection id>``."""
    return f"{POOL_PREFIX}{connection_id}"


def default_pool_slots() -> int:
    """``GOVX_DEPARTMENT_POOL_SLOTS`` or :data:`DEFAULT_POOL_SLOTS`; a new pool's slots."""
    text = os.environ.get("GOVX_DEPARTMENT_POOL_SLOTS", "").strip()
    if not text:
        return DEFAULT_POOL_SLOTS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"GOVX_DEPARTMENT_POOL_SLOTS must be a whole number >= 1, not {text!r}")
    return int(text)


def department_pools(deployment: Deployment, slots: int | None = None) -> list[DepartmentPool]:
    """One pool per department system (connection) of ``deployment``, by name."""
    slots = default_pool_slots() if slots is None else slots
    systems: dict[str, list] = {}
    for source in deployment.sources:
        systems.setdefault(source.connection, []).append(source)
    pools = []
    for connection, sources in sorted(systems.items()):
        dags = []
        for source in sources:
            dags.append(f"sync__{source.id}")
            if source.deletes.snapshot_schedule:
                dags.append(f"snapshot__{source.id}")
        departments = sorted({source.department for source in sources})
        pools.append(
            DepartmentPool(
                name=pool_name(connection),
                slots=slots,
                department=", ".join(departments),
                connection=connection,
                sources=tuple(dags),
            )
        )
    return pools


def use_embedded_airflow_unless_configured() -> None:
    """Point this process at the embedded default's Airflow metadata (``$GOVX_HOME/airflow``)
    unless the environment already names an Airflow; call before Airflow is first imported."""
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in os.environ or "AIRFLOW_HOME" in os.environ:
        return
    env = airflow_env()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    for name in (
        "AIRFLOW_HOME",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__DAGS_FOLDER",
    ):
        os.environ[name] = env[name]


def create_missing_pools(pools: list[DepartmentPool]) -> list[DepartmentPool]:
    """Create the ``pools`` Airflow's metadata database lacks; returns those created.

    Pools that exist keep their slots and description: an operator may have resized them.
    Uses the Airflow this process is configured for (``AIRFLOW_HOME``,
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``), whose database must be migrated.
    """
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with create_session() as session:
            existing = {pool.pool for pool in Pool.get_pools(session=session)}
            created = [pool for pool in pools if pool.name not in existing]
            for pool in created:
                session.add(
                    Pool(
                        pool=pool.name,
                        slots=pool.slots,
                        description=pool.description,
                        include_deferred=False,
                    )
                )
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise AirflowCommandFailed(
            f"cannot create the pools in Airflow's metadata database ({reason}); "
            "is it reachable and migrated (`airflow db migrate`)?"
        ) from None
    return created
