"""The errors a connector raises, and whether retrying may help.

Every error a connector lets out is one of these; a driver's own exception never reaches the
caller. Each connector kind translates its driver's exceptions in one place (for ``sql``:
:mod:`connectors.sql_dialects`). Two intent mixins say what a scheduler should do without string
matching, after dlt's ``TransientException``/``TerminalException``::

    Exception
     ├── TransientError                  intent: retrying may help
     ├── TerminalError                   intent: retrying will not help; a person must act
     │    └── UnknownConnectorKind       (also LookupError) no connector registered for a kind
     └── ConnectorError                  a connector could not read a source (``source_id``)
          ├── SourceUnavailable          + TransientError: connection refused or lost, timeout,
          │                                lock wait, deadlock, server shutting down, 5xx/429
          ├── SourceAuthError            + TerminalError: bad credentials, permission denied
          ├── SourceSchemaError          + TerminalError: missing database, schema, table, column
          ├── SourceQueryError           + TerminalError: the source rejects the query itself
          ├── SourceDataError            + TerminalError: a value cannot be read or converted
          └── SourceConfigError          + TerminalError: the connection URL or driver is wrong
               └── ConnectorOptionError  an unknown, missing or invalid connector option

A bare :class:`ConnectorError` (neither mixin) means the failure could not be classified; the
caller's default retry policy applies. Messages name the source and say why; they never contain
a password.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConnectorError",
    "ConnectorOptionError",
    "SourceAuthError",
    "SourceConfigError",
    "SourceDataError",
    "SourceQueryError",
    "SourceSchemaError",
    "SourceUnavailable",
    "TerminalError",
    "TransientError",
    "UnknownConnectorKind",
]


class TransientError(Exception):
    """Mixin: the operation failed for a reason that may go away; retrying may help."""


class TerminalError(Exception):
    """Mixin: retrying will not help until someone fixes configuration, credentials or data."""


class ConnectorError(Exception):
    """A connector could not read a source; the message says which source and why."""

    def __init__(self, source_id: str, reason: str) -> None:
        self.source_id = source_id
        self.reason = reason
        super().__init__(f"source {source_id!r}: {reason}")


class SourceUnavailable(ConnectorError, TransientError):
    """The source cannot be reached or read right now (network, timeout, lock, shutdown)."""


class SourceAuthError(ConnectorError, TerminalError):
    """The source rejected our credentials or does not let us read what we asked for."""


class SourceSchemaError(ConnectorError, TerminalError):
    """A database, schema, table or column the source is configured with does not exist."""


class SourceQueryError(ConnectorError, TerminalError):
    """The source rejects the query itself (syntax error, unsupported feature)."""


class SourceDataError(ConnectorError, TerminalError):
    """A value in the source cannot be read or converted (unparsable date, wrong type...)."""


class SourceConfigError(ConnectorError, TerminalError):
    """How the source is configured is wrong: its connection URL, driver or connector options."""


class ConnectorOptionError(SourceConfigError):
    """The connector options of a source are wrong; ``option`` names the first offending one."""

    def __init__(self, source_id: str, option: str, reason: str) -> None:
        self.option = option
        super().__init__(source_id, f"connector option {option!r}: {reason}")


class UnknownConnectorKind(TerminalError, LookupError):
    """No connector is registered for a kind; the message lists the kinds that are."""

    def __init__(self, kind: str, known: Sequence[str], detail: str | None = None) -> None:
        self.kind = kind
        self.known = tuple(known)
        listed = ", ".join(self.known) or "none"
        message = f"unknown connector kind {kind!r} (known kinds: {listed})"
        if detail:
            message += f"; {detail}"
        super().__init__(message)
