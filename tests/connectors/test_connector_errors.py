"""The connector error tree: every concrete error says whether retrying may help."""

from __future__ import annotations

import pytest

from connectors import errors
from connectors.errors import ConnectorError, TerminalError, TransientError

CONCRETE = [
    errors.SourceUnavailable,
    errors.SourceAuthError,
    errors.SourceSchemaError,
    errors.SourceQueryError,
    errors.SourceDataError,
    errors.SourceConfigError,
]


@pytest.mark.parametrize("error_class", CONCRETE, ids=lambda c: c.__name__)
def test_each_error_has_exactly_one_intent(error_class: type[ConnectorError]) -> None:
    error = error_class("gd_household_registry", "why")
    assert isinstance(error, ConnectorError)
    assert isinstance(error, TransientError) != isinstance(error, TerminalError)
    assert str(error) == "source 'gd_household_registry': why"


def test_only_unavailability_is_transient() -> None:
    transient = [c for c in CONCRETE if issubclass(c, TransientError)]
    assert transient == [errors.SourceUnavailable]


def test_option_error_names_the_option() -> None:
    error = errors.ConnectorOptionError("src", "table", "required")
    assert isinstance(error, errors.SourceConfigError)
    assert error.option == "table"
    assert str(error) == "source 'src': connector option 'table': required"


def test_the_tree_in_the_docstring_names_every_error() -> None:
    for name in errors.__all__:
        assert name in (errors.__doc__ or ""), name


def test_package_exports_resolve_lazily() -> None:
    import connectors

    for name in connectors.__all__:
        assert getattr(connectors, name) is not None
    with pytest.raises(AttributeError):
        _ = connectors.NoSuchThing
