"""The row-level quality gate: split a batch into rows that may become licenses and rows to hold.

Every incoming row ends in exactly one place: it passes, or it is quarantined with the reasons it
failed (identifiers masked). The rules come from the catalogue: for each license a source row
feeds, the holder identifier must be valid for the license type's holder kind, the name and
number must be present, dates must be dates and a license must not expire before it is issued.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from exchange.config import Deployment, LicenseMapping, SourceConfig
from exchange.standards.dates import to_date
from exchange.standards.holder_ids import (
    HolderKind,
    InvalidIdentifier,
    mask_id,
    validate_ric,
    validate_uscc,
)
from license_store.records import MAX_NUMBER_LENGTH

__all__ = ["REASONS_COLUMN", "GateResult", "MissingColumns", "RowGate", "applies"]

REASONS_COLUMN = "_govx_reasons"


def is_ric(value: object) -> bool:
    """Whether a value passes as a resident identity number."""
    try:
        validate_ric(value)
    except InvalidIdentifier:
        return False
    return True


def applies(mapping: LicenseMapping, row: dict) -> bool:
    """Whether the row should give a license of this mapping.

    Always, unless the mapping is ``optional`` and the row leaves its holder ID, number or issue
    date empty: a birth record without a father gives no father's copy, and that is not an error.
    """
    if not mapping.optional:
        return True
    return not any(
        _blank(row.get(column))
        for column in (mapping.holder_id, mapping.number, mapping.issue_date)
    )


class MissingColumns(ValueError):
    """The batch lacks its primary key or columns the license mappings read: a contract break."""


@dataclass(frozen=True)
class GateResult:
    """The two halves of a batch; ``quarantined`` carries a list of reasons per row."""

    passed: pa.Table
    quarantined: pa.Table


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class RowGate:
    """Checks the rows of one source against the rules of the license types it feeds."""

    def __init__(self, source: SourceConfig, deployment: Deployment) -> None:
        self.source = source
        self.rules = [
            (mapping, deployment.license_type_by_id[mapping.type].holder_kind)
            for mapping in source.licenses
        ]
        self.columns = set(source.primary_key).union(*(m.columns() for m in source.licenses))

    def _mapping_reasons(self, row: dict, mapping: LicenseMapping, kind: HolderKind) -> list[str]:
        reasons = []
        holder = row.get(mapping.holder_id)
        if _blank(holder):
            reasons.append(f"{mapping.holder_id}: missing")
        else:
            try:
                if kind is HolderKind.NATURAL:
                    validate_ric(holder, mapping.holder_id)
                else:
                    validate_uscc(holder, mapping.holder_id)
                    if is_ric(holder):
                        reasons.append(
                            f"{mapping.holder_id}: a resident identity number where a credit "
                            f"code is expected ({mask_id(holder)})"
                        )
            except InvalidIdentifier as exc:
                reasons.append(str(exc))
        for column in (mapping.holder_name, mapping.number, mapping.issue_date):
            if _blank(row.get(column)):
                reasons.append(f"{column}: missing")
        dates = {}
        for column in (mapping.issue_date, mapping.valid_from, mapping.valid_to):
            if column is None or _blank(row.get(column)):
                continue
            try:
                dates[column] = to_date(row[column])
            except ValueError as exc:
                reasons.append(f"{column}: {exc}")
        issued = dates.get(mapping.issue_date)
        until = dates.get(mapping.valid_to) if mapping.valid_to else None
        if issued and until and until < issued:
            reasons.append(f"{mapping.valid_to}: ends {until} before issue date {issued}")
        number = row.get(mapping.number)
        if not _blank(number) and len(str(number).strip()) > MAX_NUMBER_LENGTH:
            reasons.append(f"{mapping.number}: longer than {MAX_NUMBER_LENGTH} characters")
        if mapping.status:
            value = row.get(mapping.status)
            text = "" if value is None else str(value).strip()
            if text not in mapping.status_values:
                known = ", ".join(mapping.status_values)
                reasons.append(f"{mapping.status}: unknown status {text[:32]!r} (mapped: {known})")
        return reasons

    def check_row(self, row: dict) -> list[str]:
        """Every reason the row cannot be loaded or become licenses (empty: it passes)."""
        reasons = [
            f"{column}: primary key missing"
            for column in self.source.primary_key
            if _blank(row.get(column))
        ]
        for mapping, kind in self.rules:
            if not applies(mapping, row):
                continue
            for reason in self._mapping_reasons(row, mapping, kind):
                if reason not in reasons:
                    reasons.append(reason)
        return reasons

    def hold(self, batch: pa.RecordBatch | pa.Table, reason: str) -> GateResult:
        """Hold every row of the batch with the same reason (e.g. a schema drift to review)."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        reasons = pa.array([[reason]] * table.num_rows, type=pa.list_(pa.string()))
        return GateResult(
            passed=table.slice(0, 0), quarantined=table.append_column(REASONS_COLUMN, reasons)
        )

    def split(self, batch: pa.RecordBatch | pa.Table) -> GateResult:
        """Split a batch; raises :class:`MissingColumns` if mapped columns are absent."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        missing = sorted(self.columns - set(table.column_names))
        if missing:
            raise MissingColumns(
                f"source {self.source.id}: columns {', '.join(missing)} are the primary key or "
                "mapped to licenses but missing from the extracted data"
            )
        rows = table.select(sorted(self.columns)).to_pylist()
        keep: list[bool] = []
        held_reasons: list[list[str]] = []
        for row in rows:
            reasons = self.check_row(row)
            keep.append(not reasons)
            if reasons:
                held_reasons.append(reasons)
        mask = pa.array(keep, type=pa.bool_())
        passed = table.filter(mask)
        held = table.filter(pc.invert(mask))
        held = held.append_column(
            REASONS_COLUMN, pa.array(held_reasons, type=pa.list_(pa.string()))
        )
        return GateResult(passed=passed, quarantined=held)
