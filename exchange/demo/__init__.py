"""Deterministic sample department systems for ``govx demo`` and the tests (synthetic data).

Five department systems of the Guangdong sample deployment (``config/sources.yaml``) are
generated from one seeded population of residents: the provincial household registry
(``persons``), Foshan's marriage registry (``marriages``), 禅城区's birth medical certificates
(``birth_records``), the provincial business registry (``enterprises``) and 南海区's real-estate
registry (``property_rights``). Same seed, same rows, byte for byte.

Each connector kind is covered: the exchange reads the household and marriage databases directly
(SQLite files, or PostgreSQL / MariaDB), the birth records through the health department's REST
API (:func:`start_department_api`, on a loopback port), and the business and real-estate
registries from the GB18030 CSV files and ``.xlsx`` workbooks their departments drop into folders.

- :func:`generate_department_systems` writes them (each department's database: a SQLite file
  or any SQLAlchemy URL; the first delivery of the file-drop departments);
- :func:`simulate_changes` applies a day of changes for an incremental sync (and drops the
  changed rows as new files);
- :func:`sample_applicant` names a mother who holds every license the matter 新生儿入户登记
  needs; :func:`connection_env` gives the ``AIRFLOW_CONN_*`` variables of the systems;
- :data:`DIRTY_ROWS` / :func:`dirty_rows` list the rows with invalid holder identifiers that a
  quality gate must quarantine (fixed primary keys, whatever the seed and size).

Every person, ID number, company and certificate here is made up; identifiers are still masked
in every log line (:func:`exchange.standards.mask_id`).
"""

from exchange.demo.changes import simulate_changes
from exchange.demo.people import AS_OF, SAMPLE_APPLICANT_ID
from exchange.demo.systems import (
    DEMO_SEED,
    DIRTY_ROWS,
    DemoSystem,
    connection_env,
    department_api_env,
    dirty_rows,
    generate_department_systems,
    sample_applicant,
    start_department_api,
)

__all__ = [
    "AS_OF",
    "DEMO_SEED",
    "DIRTY_ROWS",
    "SAMPLE_APPLICANT_ID",
    "DemoSystem",
    "connection_env",
    "department_api_env",
    "dirty_rows",
    "generate_department_systems",
    "sample_applicant",
    "simulate_changes",
    "start_department_api",
]
