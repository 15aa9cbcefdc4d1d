"""Reading department systems: one small connector class per kind, yielding Arrow record batches.

A connector gets an :class:`ExtractRequest` (the source's YAML options, its resolved connection
URL, primary key, cursor column and last watermark) and returns an :class:`Extraction`: Arrow
record batches plus the new cursor. It never decides where the data goes. Kinds are looked up
with :func:`connector_class`; built-in kinds (``sql``) and department plug-ins register the same
way (:mod:`connectors.registry`). Every failure is a :mod:`connectors.errors` class that says
whether retrying may help::

    from connectors import ExtractRequest, connector_class

    connector = connector_class("sql")(ExtractRequest(
        source_id="gd_household_registry", options={"table": "persons"}, url=url,
        primary_key=("person_id",), cursor_column="updated_at", since=saved_cursor))
    extraction = connector.extract()
    for batch in extraction:
        ...
    new_cursor = extraction.cursor_after

Names are imported lazily so that ``import connectors`` stays cheap for Airflow DAG files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.base import Connector, Extraction, ExtractRequest
    from connectors.errors import (
        ConnectorError,
        ConnectorOptionError,
        SourceAuthError,
        SourceConfigError,
        SourceDataError,
        SourceQueryError,
        SourceSchemaError,
        SourceUnavailable,
        TerminalError,
        TransientError,
        UnknownConnectorKind,
    )
    from connectors.registry import available_kinds, connector_class, register

_EXPORTS = {
    "Connector": "connectors.base",
    "ExtractRequest": "connectors.base",
    "Extraction": "connectors.base",
    "ConnectorError": "connectors.errors",
    "ConnectorOptionError": "connectors.errors",
    "SourceAuthError": "connectors.errors",
    "SourceConfigError": "connectors.errors",
    "SourceDataError": "connectors.errors",
    "SourceQueryError": "connectors.errors",
    "SourceSchemaError": "connectors.errors",
    "SourceUnavailable": "connectors.errors",
    "TerminalError": "connectors.errors",
    "TransientError": "connectors.errors",
    "UnknownConnectorKind": "connectors.errors",
    "available_kinds": "connectors.registry",
    "connector_class": "connectors.registry",
    "register": "connectors.registry",
}

__all__ = [
    "Connector",
    "ConnectorError",
    "ConnectorOptionError",
    "ExtractRequest",
    "Extraction",
    "SourceAuthError",
    "SourceConfigError",
    "SourceDataError",
    "SourceQueryError",
    "SourceSchemaError",
    "SourceUnavailable",
    "TerminalError",
    "TransientError",
    "UnknownConnectorKind",
    "available_kinds",
    "connector_class",
    "register",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'connectors' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
