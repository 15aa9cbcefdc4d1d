"""The license store's own errors: callers never catch a database driver's exception.

The tree::

    LicenseStoreError              anything the store raises on purpose
    ├── StoreUnavailable           transient: connection refused or lost, lock timeout, deadlock
    ├── SchemaNotCurrent           the database is not migrated to this code's head revision
    ├── LicenseNotFound            no license has that identifier (or it is malformed)
    └── ConflictError              the data violates a store constraint (uniqueness, not-null, ...)

``transient`` says whether retrying the same call may succeed, so a scheduler can decide to retry
or fail fast without matching strings. Driver errors are translated into these in exactly one
place, :func:`license_store.database.translate_errors`. Messages never contain an unmasked holder
ID or a password.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConflictError",
    "LicenseNotFound",
    "LicenseStoreError",
    "SchemaNotCurrent",
    "StoreUnavailable",
]


class LicenseStoreError(Exception):
    """Base of every error the license store raises."""

    transient: ClassVar[bool] = False


class StoreUnavailable(LicenseStoreError):
    """The database cannot be reached right now (refused, lost, locked, deadlocked); retry later."""

    transient: ClassVar[bool] = True


class SchemaNotCurrent(LicenseStoreError):
    """The database schema is missing or older than this code: run ``LicenseStore.upgrade()``."""


class LicenseNotFound(LicenseStoreError, LookupError):
    """No license has the given identifier."""


class ConflictError(LicenseStoreError):
    """The write conflicts with a constraint of the store; nothing of the call was written."""
