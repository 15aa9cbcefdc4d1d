"""Which connector class reads which ``kind``: built-in kinds and department plug-ins alike.

A kind becomes known in one of two ways, and both end in :func:`register`:

* a class decorated with ``@register("kind")`` is imported (the built-in modules listed in
  ``BUILTIN_MODULES`` are imported lazily, on the first lookup);
* a distribution declares an entry point in the ``govexchange.connectors`` group, named after the
  kind and pointing at the class (or at a module that registers it on import)::

      [project.entry-points."govexchange.connectors"]
      hl7 = "dept_health_connectors.hl7:Hl7Connector"

Entry points are loaded lazily on the first lookup too, so importing this module is cheap. A
plug-in that fails to load does not hide the other kinds; looking up its own kind says why.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TypeVar

from connectors.base import Connector
from connectors.errors import UnknownConnectorKind

__all__ = ["ENTRY_POINT_GROUP", "available_kinds", "connector_class", "register"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "govexchange.connectors"
BUILTIN_MODULES: tuple[str, ...] = ("connectors.sql", "connectors.files", "connectors.rest")
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,62}$")

ConnectorT = TypeVar("ConnectorT", bound=type[Connector])

_classes: dict[str, type[Connector]] = {}
_broken: dict[str, str] = {}  # kind -> why its plug-in could not be loaded
_loaded = False


def register(kind: str) -> Callable[[ConnectorT], ConnectorT]:
    """Class decorator: make ``cls`` the connector for ``kind`` (and set ``cls.kind``).

    Registering the same class twice is harmless; a second class for a taken kind is a
    ``ValueError``.
    """
    if not KIND_PATTERN.match(kind):
        raise ValueError(f"connector kind {kind!r} must match {KIND_PATTERN.pattern}")

    def decorate(cls: ConnectorT) -> ConnectorT:
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TypeError(f"@register({kind!r}) needs a subclass of connectors.base.Connector")
        existing = _classes.get(kind)
        if existing is not None and _qualified_name(existing) != _qualified_name(cls):
            raise ValueError(
                f"connector kind {kind!r} is already registered by {_qualified_name(existing)}"
            )
        cls.kind = kind
        _classes[kind] = cls
        _broken.pop(kind, None)
        return cls

    return decorate


def connector_class(kind: str) -> type[Connector]:
    """The connector class registered for ``kind``.

    Raises :class:`~connectors.errors.UnknownConnectorKind` listing the known kinds.
    """
    _load_once()
    try:
        return _classes[kind]
    except KeyError:
        raise UnknownConnectorKind(kind, available_kinds(), _broken.get(kind)) from None


def available_kinds() -> list[str]:
    """Every registered kind, sorted."""
    _load_once()
    return sorted(_classes)


def _load_once() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for entry_point in _entry_points():
        _load_entry_point(entry_point)


def _entry_points() -> Iterable[EntryPoint]:
    return entry_points(group=ENTRY_POINT_GROUP)


def _load_entry_point(entry_point: EntryPoint) -> None:
    kind = entry_point.name
    try:
        loaded = entry_point.load()
        if isinstance(loaded, type) and issubclass(loaded, Connector):
            declared = _classes.get(kind)
            if declared is None or _qualified_name(declared) != _qualified_name(loaded):
                register(kind)(loaded)
        elif not isinstance(loaded, ModuleType):
            raise TypeError(f"{entry_point.value} is neither a Connector subclass nor a module")
        if kind not in _classes:
            raise LookupError(f"importing {entry_point.value} registered no kind {kind!r}")
    except Exception as exc:  # a broken plug-in must not hide the other kinds
        reason = f"the plug-in {entry_point.value!r} failed to load: {type(exc).__name__}: {exc}"
        _broken[kind] = reason
        log.warning("connector kind %r: %s", kind, reason)


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
