"""Deterministic sample department systems for ``govx demo`` and the tests (synthetic data).

Five department systems of the Guangdong sample deployment (``config/sources.yaml``) are
generated from one seeded population of residents: the provincial household registry
(``persons``), Foshan's marriage registry (``marriages``), 禅城区's birth medical certificates
(``birth_records``), the provincial business registry (``enterprises``) and 南海区's real-estate
registry (``property_rights``). Same seed, same rows, byte for byte.

- :func:`generate_department_systems` writes them (SQLite files or any SQLAlchemy URL);
- :func:`simulate_changes` applies a day of changes for an incremental sync;
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
    dirty_rows,
    generate_department_systems,
    sample_applicant,
)

__all__ = [
    "AS_OF",
    "DEMO_SEED",
    "DIRTY_ROWS",
    "SAMPLE_APPLICANT_ID",
    "DemoSystem",
    "connection_env",
    "dirty_rows",
    "generate_department_systems",
    "sample_applicant",
    "simulate_changes",
]
