"""The electronic license library (电子证照库): licenses by holder ID, with versions and history.

The exchange hands :class:`LicenseRecord` objects to :meth:`LicenseStore.upsert`; intake systems
read :class:`License` objects by holder ID or license identifier, in Python or over the HTTP API
(:func:`license_store.api.create_app`). The store runs on SQLite (embedded default) or PostgreSQL
(production), reached by URL, with its schema managed by Alembic (:meth:`LicenseStore.upgrade`).

Modules: ``records`` (input and output data), ``models`` (tables), ``migrations`` (Alembic),
``database`` (engines, dialect quirks, error translation), ``store`` (reads, writes and the
lifecycle), ``signing`` and ``signatures`` (department signatures of versions),
``verification`` (is a license genuine and standing), ``audit`` (the audit trail), ``errors``
(the error tree), ``api`` (FastAPI).
"""

from license_store.errors import (
    ConflictError,
    LicenseNotFound,
    LicenseStoreError,
    SchemaNotCurrent,
    StoreUnavailable,
)
from license_store.records import License, LicenseRecord, LicenseVersion, content_hash
from license_store.store import LicenseStore, UpsertResult

__all__ = [
    "ConflictError",
    "License",
    "LicenseNotFound",
    "LicenseRecord",
    "LicenseStore",
    "LicenseStoreError",
    "LicenseVersion",
    "SchemaNotCurrent",
    "StoreUnavailable",
    "UpsertResult",
    "content_hash",
]
