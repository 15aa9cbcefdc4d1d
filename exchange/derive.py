"""Turn a source's gated rows into license records, as the source's ``licenses:`` mappings say.

The issuer is the source's department (its credit code goes into the license identifier) and the
region of jurisdiction is that department's region. Validity follows the license type's rule.
Rows reach this module only after the quality gate, so a conversion failure here is a bug.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from exchange.config import Deployment, LicenseMapping, LicenseType, SourceConfig
from exchange.standards.dates import add_years, to_date
from exchange.standards.holder_ids import normalise_id
from license_store.records import LicenseRecord
from quality.gate import applies

__all__ = ["LicenseDeriver"]


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


class LicenseDeriver:
    """Builds :class:`LicenseRecord` objects for one source and run."""

    def __init__(self, source: SourceConfig, deployment: Deployment, run_id: str) -> None:
        self.source = source
        self.run_id = run_id
        department = deployment.department_by_id[source.department]
        self.issuer_code = department.code
        self.issuer_name = department.name
        self.region_code = department.region
        self.mappings: list[tuple[LicenseMapping, LicenseType]] = [
            (m, deployment.license_type_by_id[m.type]) for m in source.licenses
        ]

    def _record(
        self, row: dict, mapping: LicenseMapping, ltype: LicenseType, revoked: bool = False
    ) -> LicenseRecord:
        kind = ltype.holder_kind
        holder_id = normalise_id(row[mapping.holder_id])  # validated by the quality gate
        issue_date = to_date(row[mapping.issue_date])
        assert issue_date is not None  # the gate guarantees it
        rule = ltype.validity.rule
        if rule == "from_source":
            valid_from = to_date(row.get(mapping.valid_from)) if mapping.valid_from else None
            valid_to = to_date(row.get(mapping.valid_to)) if mapping.valid_to else None
            valid_from = valid_from or issue_date
        elif rule == "years":
            valid_from, valid_to = issue_date, add_years(issue_date, ltype.validity.years or 0)
        else:
            valid_from, valid_to = issue_date, None
        if revoked:
            status = "revoked"
        elif mapping.status:
            status = mapping.status_values[_text(row.get(mapping.status))]
        else:
            status = "valid"
        face = {
            name: _text(row.get(column))
            for name, column in mapping.face.items()
            if row.get(column) is not None
        }
        return LicenseRecord(
            type_code=ltype.code,
            type_name=ltype.name,
            issuer_code=self.issuer_code,
            issuer_name=self.issuer_name,
            region_code=self.region_code,
            holder_id=holder_id,
            holder_kind=kind.value,
            holder_name=_text(row[mapping.holder_name]),
            number=_text(row[mapping.number]),
            issue_date=issue_date,
            valid_from=valid_from,
            valid_to=valid_to,
            status=status,
            face=face,
            source_id=self.source.id,
            run_id=self.run_id,
        )

    def records(
        self, table: pa.Table | pa.RecordBatch, *, revoked: bool = False
    ) -> Iterator[LicenseRecord]:
        """One record per row and mapping that applies to it (see :func:`quality.gate.applies`).

        ``revoked`` marks rows the department deleted: their licenses are revoked, not dropped,
        so an intake window sees that the certificate no longer stands.
        """
        for row in table.to_pylist():
            for mapping, ltype in self.mappings:
                if applies(mapping, row):
                    yield self._record(row, mapping, ltype, revoked)
