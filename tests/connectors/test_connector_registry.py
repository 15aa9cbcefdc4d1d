"""The connector registry: built-in kinds, decorated plug-ins and entry-point plug-ins."""

from __future__ import annotations

import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from connectors import registry
from connectors.base import Connector, Extraction, ExtractRequest
from connectors.errors import TerminalError, UnknownConnectorKind
from connectors.sql import SqlConnector


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register kinds without leaking them into other tests."""
    registry.available_kinds()  # load built-ins and installed plug-ins first
    monkeypatch.setattr(registry, "_classes", dict(registry._classes))
    monkeypatch.setattr(registry, "_broken", dict(registry._broken))


def test_sql_is_built_in() -> None:
    assert registry.connector_class("sql") is SqlConnector
    assert SqlConnector.kind == "sql"
    assert "sql" in registry.available_kinds()


def test_unknown_kind_lists_known_kinds() -> None:
    with pytest.raises(UnknownConnectorKind) as caught:
        registry.connector_class("ftp")
    assert isinstance(caught.value, TerminalError)
    assert isinstance(caught.value, LookupError)
    assert "'ftp'" in str(caught.value)
    assert "sql" in str(caught.value)
    assert "sql" in caught.value.known


@pytest.mark.usefixtures("clean_registry")
def test_a_decorated_plugin_is_found() -> None:
    @registry.register("hospital_hl7")
    class Hl7Connector(Connector):
        def extract(self) -> Extraction:
            raise NotImplementedError

    assert registry.connector_class("hospital_hl7") is Hl7Connector
    assert Hl7Connector.kind == "hospital_hl7"
    assert "hospital_hl7" in registry.available_kinds()
    connector = Hl7Connector(ExtractRequest("s", {}, "sqlite://", ("id",), None, None))
    assert connector.request.source_id == "s"


@pytest.mark.usefixtures("clean_registry")
def test_a_kind_cannot_be_taken_twice() -> None:
    with pytest.raises(ValueError, match=r"already registered by connectors\.sql\.SqlConnector"):

        @registry.register("sql")
        class Impostor(Connector):
            def extract(self) -> Extraction:
                raise NotImplementedError


def test_register_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="must match"):
        registry.register("Bad Kind")
    with pytest.raises(TypeError, match="Connector"):
        registry.register("not_a_connector")(object)  # type: ignore[type-var]


@pytest.mark.usefixtures("clean_registry")
def test_entry_point_plugins_load_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dept_connectors.py").write_text(
        textwrap.dedent(
            """
            from connectors.base import Connector

            class CsvDropConnector(Connector):
                def extract(self):
                    raise NotImplementedError
            """
        ),
        encoding="utf-8",
    )
    (tmp_path / "dept_broken.py").write_text("raise ImportError('no such driver')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = registry.ENTRY_POINT_GROUP
    plugins = [
        EntryPoint("sql", "connectors.sql:SqlConnector", group),  # what pyproject declares
        EntryPoint("csv_drop", "dept_connectors:CsvDropConnector", group),
        EntryPoint("mainframe", "dept_broken:Connector", group),
    ]
    monkeypatch.setattr(registry, "_entry_points", lambda: plugins)
    monkeypatch.setattr(registry, "_loaded", False)

    found = registry.connector_class("csv_drop")
    assert found.__name__ == "CsvDropConnector"
    assert found.kind == "csv_drop"
    assert registry.connector_class("sql") is SqlConnector  # a broken plug-in hides nothing
    with pytest.raises(UnknownConnectorKind, match="no such driver"):
        registry.connector_class("mainframe")
    assert "mainframe" not in registry.available_kinds()
