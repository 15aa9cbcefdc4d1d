"""The quarantine browser's data: which runs hold rows, and a page of held rows, masked.

A quarantine file counts only through the run record that points at it (a killed run may leave a
stray file nothing reads), so the list comes from the exchange state (each source's
:data:`RUNS_PER_SOURCE` newest runs), and a file is opened only if its path lies inside the lake's
``quarantine/<source>/`` folder (a local directory, or a prefix of the lake's ``s3://`` URL).

Admins see personal data only masked: holder IDs with :func:`mask_id`, names down to their first
character, addresses to their first characters, birth dates to the year, and every value through
:func:`mask_ids_in_text`, which catches any ID-shaped text in any column. Which columns are IDs,
names, addresses and birth dates comes from the source's license mappings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from exchange.config import Deployment, SourceConfig
from exchange.lake import REASONS_COLUMN
from exchange.lakefs import Lake, Location, is_file, parquet_file
from exchange.standards.holder_ids import mask_id, mask_ids_in_text
from exchange.state import ExchangeState, RunRecord
from quality.history import source_history

__all__ = [
    "PAGE_SIZE",
    "HeldFile",
    "HeldPage",
    "NotHeld",
    "held_file",
    "held_files",
    "masked_cell",
    "read_page",
    "valid_run_id",
]

PAGE_SIZE = 50
MAX_CELL = 80
MAX_REASON = 300
RUNS_PER_SOURCE = 200
RUN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")
_NAME_KEYS = ("name", "representative")
_ADDRESS_KEYS = ("address", "location")
ADDRESS_KEEP = 6


class NotHeld(LookupError):
    """No committed quarantine file for this source and run (or one outside the lake)."""


@dataclass(frozen=True)
class HeldFile:
    """A run's quarantine file."""

    run: RunRecord
    path: Location
    """A ``Path`` on a local lake, the file's URL on an object store."""
    rows: int


@dataclass(frozen=True)
class HeldPage:
    """One page of a quarantine file's rows, every value masked."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    reasons: tuple[tuple[str, ...], ...]
    page: int
    pages: int
    total: int


def valid_run_id(run_id: str) -> bool:
    """Whether ``run_id`` has the shape of a run id (letters, digits, ``-``, ``_``)."""
    return bool(RUN_ID.fullmatch(run_id))


def _held(run: RunRecord, lake: Lake) -> HeldFile | None:
    if not run.quarantine_path:
        return None
    path: Location = run.quarantine_path if not lake.local else Path(run.quarantine_path)
    if not lake.contains(path, "quarantine", run.source_id) or not is_file(path):
        return None
    return HeldFile(run=run, path=path, rows=parquet_file(path).metadata.num_rows)


def held_files(
    deployment: Deployment, state: ExchangeState, lake: Lake | Location
) -> list[HeldFile]:
    """Every recorded quarantine file of the deployment's sources, newest run first."""
    lake = Lake.of(lake)
    found = [
        held
        for source in deployment.sources
        for run in source_history(state, source.id, limit=RUNS_PER_SOURCE).runs
        if (held := _held(run, lake)) is not None
    ]
    return sorted(found, key=lambda held: held.run.started_at, reverse=True)


def held_file(
    deployment: Deployment,
    state: ExchangeState,
    lake: Lake | Location,
    source_id: str,
    run_id: str,
) -> HeldFile:
    """The quarantine file of one run; :class:`NotHeld` unless it is recorded and in the lake."""
    if source_id not in deployment.source_by_id or not valid_run_id(run_id):
        raise NotHeld(source_id)
    runs = source_history(state, source_id, limit=RUNS_PER_SOURCE).runs
    run = next((run for run in runs if run.run_id == run_id), None)
    held = _held(run, Lake.of(lake)) if run is not None else None
    if held is None:
        raise NotHeld(run_id)
    return held


def _column_masks(source: SourceConfig) -> dict[str, Callable[[str], str]]:
    """How each personal column of the source is masked, from its license mappings."""
    masks: dict[str, Callable[[str], str]] = {}
    for mapping in source.licenses:
        for key, column in mapping.face.items():
            if any(word in key for word in _NAME_KEYS):
                masks[column] = _mask_name
            elif any(word in key for word in _ADDRESS_KEYS):
                masks[column] = _mask_address
            elif key == "birth_date":
                masks[column] = _mask_birth_date
    for mapping in source.licenses:
        masks[mapping.holder_name] = _mask_name
        masks[mapping.holder_id] = mask_id
    return masks


def _mask_name(text: str) -> str:
    return text[:1] + "*" * max(len(text) - 1, 1) if text else ""


def _mask_address(text: str) -> str:
    return text[:ADDRESS_KEEP] + "****" if len(text) > ADDRESS_KEEP else "****"


def _mask_birth_date(text: str) -> str:
    return text[:4] + "-**-**" if len(text) >= 4 else "****"


def masked_cell(
    value: object, mask: Callable[[str], str] | None = None, limit: int = MAX_CELL
) -> str:
    """A value as the page shows it: text, masked, ID-shaped parts masked, length bounded."""
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if mask is not None:
        text = mask(text)
    text = mask_ids_in_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _maskers(source: SourceConfig, columns: Iterable[str]) -> list[Callable[[str], str] | None]:
    masks = _column_masks(source)
    return [masks.get(column) for column in columns]


def _rows_between(path: Location, start: int, stop: int) -> pa.Table:
    """Rows ``start <= i < stop`` of a Parquet file, reading only the row groups they are in."""
    parquet = parquet_file(path)
    groups: list[int] = []
    first_row = offset = 0
    for index in range(parquet.metadata.num_row_groups):
        count = parquet.metadata.row_group(index).num_rows
        if offset + count > start and offset < stop:
            if not groups:
                first_row = offset
            groups.append(index)
        offset += count
    if not groups:
        return parquet.schema_arrow.empty_table()
    return parquet.read_row_groups(groups).slice(start - first_row, stop - start)


def read_page(
    held: HeldFile, source: SourceConfig, page: int, page_size: int = PAGE_SIZE
) -> HeldPage:
    """Page ``page`` (from 1) of a quarantine file; a page past the end is the last page."""
    pages = max(math.ceil(held.rows / page_size), 1)
    page = min(max(page, 1), pages)
    table = _rows_between(held.path, (page - 1) * page_size, page * page_size)
    columns = [name for name in table.column_names if name != REASONS_COLUMN]
    maskers = _maskers(source, columns)
    data = [table.column(name).to_pylist() for name in columns]
    rows = tuple(
        tuple(masked_cell(values[i], mask) for values, mask in zip(data, maskers, strict=True))
        for i in range(table.num_rows)
    )
    if REASONS_COLUMN in table.column_names:
        reasons = tuple(
            tuple(masked_cell(reason, limit=MAX_REASON) for reason in (item or ()))
            for item in table.column(REASONS_COLUMN).to_pylist()
        )
    else:
        reasons = tuple(() for _ in range(table.num_rows))
    return HeldPage(
        columns=tuple(columns),
        rows=rows,
        reasons=reasons,
        page=page,
        pages=pages,
        total=held.rows,
    )
