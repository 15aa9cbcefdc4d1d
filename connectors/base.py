"""The contract every connector kind fulfils: a request in, Arrow record batches and a cursor out.

The exchange builds an :class:`ExtractRequest` from a source's YAML block and its resolved
connection, looks up the connector class of the source's kind (:mod:`connectors.registry`) and
iterates the :class:`Extraction` that :meth:`Connector.extract` returns. A connector only reads:
where the batches go, and when the new cursor is saved, is the caller's business.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from connectors.errors import ConnectorOptionError

__all__ = ["Connector", "ExtractRequest", "Extraction"]

OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass(frozen=True)
class ExtractRequest:
    """What to read from one source in one run.

    ``url`` is the resolved connection URL and carries the password: it is left out of ``repr``
    and must never be logged. ``since`` is the last saved watermark (a JSON value) or ``None``
    for a full refresh.
    """

    source_id: str
    options: Mapping[str, Any]
    url: str = field(repr=False)
    primary_key: tuple[str, ...]
    cursor_column: str | None
    since: Any | None
    batch_size: int = 5000


@runtime_checkable
class Extraction(Protocol):
    """The result of :meth:`Connector.extract`: iterate it once for the record batches."""

    def __iter__(self) -> Iterator[pa.RecordBatch]: ...

    @property
    def cursor_after(self) -> Any | None:
        """Highest cursor value seen, as a JSON value; equals ``since`` when no row was read."""
        ...

    @property
    def rows_read(self) -> int:
        """Rows yielded so far."""
        ...

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of every batch, known before iteration (even for an empty source)."""
        ...


class Connector(ABC):
    """One kind of department system. Subclasses validate their options in ``__init__``.

    A subclass registers its kind with :func:`connectors.registry.register` (and, when it ships
    in its own distribution, with an entry point in the ``govexchange.connectors`` group).
    """

    kind: ClassVar[str]

    def __init__(self, request: ExtractRequest) -> None:
        self.request = request

    @abstractmethod
    def extract(self) -> Extraction:
        """Start reading; raises a :class:`~connectors.errors.ConnectorError` when it cannot."""

    def resolve_batch_size(self, configured: int | None) -> int:
        """Rows per batch: the source's ``batch_size`` option, else the request's."""
        size = configured or self.request.batch_size
        if size <= 0:
            raise ConnectorOptionError(
                self.request.source_id, "batch_size", "must be a positive number of rows"
            )
        return size

    def parse_options(self, model: type[OptionsT]) -> OptionsT:
        """Validate ``request.options`` with a pydantic model (use ``extra="forbid"``).

        A problem becomes a :class:`~connectors.errors.ConnectorOptionError` naming the option,
        e.g. ``source 'x': connector option 'tabel': unknown option (known: query, table)``.
        """
        try:
            return model.model_validate(dict(self.request.options))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            option = ".".join(str(part) for part in first["loc"]) or "(options)"
            if first["type"] == "extra_forbidden":
                known = ", ".join(sorted(_option_names(model)))
                reason = f"unknown option for the {self.kind} connector (known: {known})"
            else:
                reason = first["msg"].removeprefix("Value error, ")
            raise ConnectorOptionError(self.request.source_id, option, reason) from None


def _option_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]
