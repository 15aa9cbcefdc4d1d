"""How the demo's file-drop and REST departments hand their rows to the exchange.

The market-regulation and natural-resources departments export from their own databases into a
drop folder: :func:`write_drop` writes one delivery, a GB18030 CSV file (business registry) or an
``.xlsx`` workbook (real-estate registry) with every column of the rows given, dates as ISO text
(CSV) or date cells (xlsx). The first delivery holds every row; each later one only the rows that
changed, as a department's daily export does.

The health department answers a REST API (:func:`exchange.demo.start_department_api`, the
simulator of :mod:`exchange.demo.rest_simulator`) from :func:`store_records`, which reads the
department's database on every request, so the rows :func:`exchange.demo.simulate_changes`
changed are served at once (and picked up by the ``updated_since`` parameter of an incremental
sync).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import openpyxl
from sqlalchemy import Table, create_engine, select
from sqlalchemy.pool import NullPool

from exchange.demo.schema import SystemSpec

__all__ = ["DROP_ENCODING", "store_records", "write_drop"]

DROP_ENCODING = "gb18030"
"""The encoding of the business registry's CSV drops (a Chinese Windows export's default)."""
_EXTENSIONS = {"csv": ".csv", "xlsx": ".xlsx"}


def write_drop(spec: SystemSpec, folder: Path, rows: Sequence[dict[str, Any]], label: str) -> Path:
    """Write ``rows`` as one delivery file ``<table>_<label>.csv|.xlsx`` in ``folder``; its path.

    The columns are the table's, then any other key of the first row (a column the department
    added to its export).

    A file of that name already there is never overwritten (``_2``, ``_3`` ... are added): a
    department drops new files, it does not edit delivered ones.
    """
    if spec.delivery not in _EXTENSIONS:
        raise ValueError(f"{spec.source_id} delivers by {spec.delivery}, not by file drops")
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = f"{spec.table.name}_{label}", _EXTENSIONS[spec.delivery]
    path, copy = folder / f"{stem}{suffix}", 1
    while path.exists():
        copy += 1
        path = folder / f"{stem}_{copy}{suffix}"
    columns = [column.name for column in spec.table.columns]
    columns += [name for name in (rows[0] if rows else {}) if name not in columns]
    partial = path.with_name(f".{path.name}.part")  # the connector ignores names starting with .
    if spec.delivery == "csv":
        partial.write_bytes(_csv_bytes(columns, rows))
    else:
        _write_xlsx(partial, spec.table.name, columns, rows)
    partial.replace(path)  # the file appears complete, or not at all
    return path


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _csv_bytes(columns: list[str], rows: Sequence[dict[str, Any]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([_csv_text(row[c]) for c in columns] for row in rows)
    return buffer.getvalue().encode(DROP_ENCODING)


def _write_xlsx(path: Path, sheet: str, columns: list[str], rows: Sequence[dict[str, Any]]) -> None:
    workbook = openpyxl.Workbook(write_only=True)
    worksheet = workbook.create_sheet(sheet)
    worksheet.append(columns)
    for row in rows:
        worksheet.append([row[c] for c in columns])
    workbook.save(path)


def store_records(url: str, table: Table) -> Callable[[], list[dict[str, Any]]]:
    """A function that reads every row of ``table`` at ``url``, in primary-key order."""
    key = table.primary_key.columns.values()[0]

    def read() -> list[dict[str, Any]]:
        engine = create_engine(url, poolclass=NullPool)  # called from the server's threads
        try:
            with engine.connect() as connection:
                result = connection.execute(select(table).order_by(key))
                return [dict(row) for row in result.mappings()]
        finally:
            engine.dispose()

    return read
