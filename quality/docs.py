"""Great Expectations Data Docs of the quality gate: one HTML page per validated run, and an index.

After each publish the run's validation results (one per gated batch, added up per expectation)
are rendered with GX's own Data Docs renderer (``ValidationResultsPageRenderer`` and
``DefaultJinjaPageView``) to ``$GOVX_HOME/quality/data_docs/<source>/<run_id>.html``, and
``index.html`` lists every page, newest first. The admin dashboard serves the folder at
``/admin/data-docs/``.

Personal data never reaches the pages: the results keep counts and percentages only -- every
list of unexpected values, indexes and value counts is dropped before rendering (the quarantine
file holds the masked reasons per row) -- and the batch description is reduced to the source
and run. Pages are written to a temporary name and renamed, and the index is rebuilt under a
file lock, so two runs publishing at once (different sources) both end up listed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import html
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_data_docs", "combined_result", "data_docs_dir"]

KEPT_RESULT_KEYS = (
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "missing_count",
    "missing_percent",
    "unexpected_percent_total",
    "unexpected_percent_nonmissing",
)
"""What a page shows of an expectation's result: counts, never values."""


def data_docs_dir() -> Path:
    """The Data Docs site: ``$GOVX_HOME/quality/data_docs`` (``index.html`` at its root)."""
    from exchange.settings import govx_home

    return govx_home() / "quality" / "data_docs"


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def combined_result(
    validations: Sequence[Any], source_id: str, run_id: str, status: str
) -> Any | None:
    """The run's validations as one suite result with counts only (``None`` if there were none).

    Each expectation's counts are added up over the batches; the expectation succeeds only if
    it succeeded on every batch.
    """
    from great_expectations.core import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.core.run_identifier import RunIdentifier

    validations = [v for v in validations if v is not None]
    if not validations:
        return None
    results = []
    for outcomes in zip(*(v.results for v in validations), strict=True):
        counts: dict[str, int] = {}
        for outcome in outcomes:
            for key in ("element_count", "unexpected_count", "missing_count"):
                value = (outcome.result or {}).get(key)
                if isinstance(value, int):
                    counts[key] = counts.get(key, 0) + value
        result: dict[str, Any] = dict(counts)
        elements = counts.get("element_count", 0)
        unexpected = counts.get("unexpected_count", 0)
        missing = counts.get("missing_count", 0)
        if "unexpected_count" in counts:
            result["unexpected_percent"] = _percent(unexpected, elements - missing)
            result["unexpected_percent_total"] = _percent(unexpected, elements)
            result["unexpected_percent_nonmissing"] = _percent(unexpected, elements - missing)
        if "missing_count" in counts:
            result["missing_percent"] = _percent(missing, elements)
        first = outcomes[0]
        results.append(
            ExpectationValidationResult(
                success=all(o.success for o in outcomes),
                expectation_config=first.expectation_config,
                result={k: result[k] for k in KEPT_RESULT_KEYS if k in result},
                exception_info={
                    "raised_exception": False,
                    "exception_message": None,
                    "exception_traceback": None,
                },
            )
        )
    successful = sum(1 for r in results if r.success)
    return ExpectationSuiteValidationResult(
        success=successful == len(results),
        results=results,
        suite_name=validations[0].suite_name,
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": successful,
            "unsuccessful_expectations": len(results) - successful,
            "success_percent": _percent(successful, len(results)),
        },
        meta={
            "great_expectations_version": validations[0].meta.get("great_expectations_version"),
            "run_id": RunIdentifier(run_name=run_id, run_time=dt.datetime.now(dt.UTC)),
            "batch_spec": {"source": source_id, "run": run_id, "run status": status},
        },
    )


def _render(result: Any) -> str:
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)  # served read-only by the admin dashboard
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _index(root: Path) -> str:
    pages = sorted(
        (p for p in root.glob("*/*.html") if not p.name.startswith(".")),
        key=lambda p: (p.stem, p.parent.name),
        reverse=True,
    )
    rows = "\n".join(
        f'<tr><td>{html.escape(p.parent.name)}</td><td><a href="{html.escape(p.parent.name)}/'
        f'{html.escape(p.name)}">{html.escape(p.stem)}</a></td></tr>'
        for p in pages
    )
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        "<title>govexchange quality gate: Data Docs</title></head><body>\n"
        "<h1>Quality gate validations</h1>\n"
        "<p>One page per published run: each expectation of the source's suite with the number "
        "and share of rows that failed it. Held rows and their masked reasons are in the "
        "quarantine.</p>\n"
        f"<table><tr><th>source</th><th>run</th></tr>\n{rows}\n</table>\n</body></html>\n"
    )


def build_data_docs(
    source_id: str,
    run_id: str,
    validations: Sequence[Any],
    *,
    status: str = "succeeded",
    root: Path | None = None,
) -> Path | None:
    """Render a run's validation page and refresh the index; returns the page (``None``: none)."""
    result = combined_result(validations, source_id, run_id, status)
    if result is None:
        return None
    root = root or data_docs_dir()
    page = root / source_id / f"{run_id}.html"
    _write_atomically(page, _render(result))
    with _locked(root):
        _write_atomically(root / "index.html", _index(root))
    return page
