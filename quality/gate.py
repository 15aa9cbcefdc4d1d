"""The row-level quality gate: split a batch into rows that may become licenses and rows to hold.

Every incoming row ends in exactly one place: it passes, or it is quarantined with the rules it
failed. The rules are the source's Great Expectations suite (:mod:`quality.suite`, generated
from the catalogue plus the source's YAML); GX validates the batch with ``result_format``
``COMPLETE`` and the indexes of each expectation's unexpected rows decide the split. A held
row carries ``_govx_reasons`` (one masked, human message per failed rule, e.g.
``id_number: bad check character (4406**********0021)``) and ``_govx_expectations`` (the
failed rules with their GX expectation types).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.config import Deployment, LicenseMapping, SourceConfig
from exchange.lake import EXPECTATIONS_COLUMN, REASONS_COLUMN
from quality.suite import SourceSuite, SuiteError, gx_batch_definition, source_suite

__all__ = [
    "EXPECTATIONS_COLUMN",
    "REASONS_COLUMN",
    "GateResult",
    "MissingColumns",
    "RowGate",
    "SuiteError",
    "applies",
]

RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": 0,
    "return_unexpected_index_query": False,
}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


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
    """The two halves of a batch; ``quarantined`` carries its reasons and failed expectations.

    ``validation`` is the GX suite validation result of the batch (``None`` for a batch held
    whole without validating it).
    """

    passed: pa.Table
    quarantined: pa.Table
    validation: Any = field(default=None, compare=False, repr=False)


def _held(table: pa.Table, reasons: list[list[str]], rules: list[list[str]]) -> pa.Table:
    strings = pa.list_(pa.string())
    return table.append_column(REASONS_COLUMN, pa.array(reasons, type=strings)).append_column(
        EXPECTATIONS_COLUMN, pa.array(rules, type=strings)
    )


class RowGate:
    """Checks the rows of one source against its Great Expectations suite."""

    def __init__(self, source: SourceConfig, deployment: Deployment) -> None:
        self.source = source
        self.deployment = deployment
        self.columns = set(source.primary_key).union(*(m.columns() for m in source.licenses))
        self._suite: SourceSuite | None = None

    @property
    def suite(self) -> SourceSuite:
        """The source's suite (built on first use, then shared by the process)."""
        if self._suite is None:
            self._suite = source_suite(self.source, self.deployment)
        return self._suite

    def hold(self, batch: pa.RecordBatch | pa.Table, reason: str) -> GateResult:
        """Hold every row of the batch with the same reason (e.g. a schema drift to review)."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        rows = table.num_rows
        return GateResult(
            passed=table.slice(0, 0), quarantined=_held(table, [[reason]] * rows, [[]] * rows)
        )

    def _check_columns(self, table: pa.Table) -> None:
        needed = self.columns | {
            name for name in self.suite.columns if not name.startswith("govx.")
        }
        missing = sorted(needed - set(table.column_names))
        if missing:
            raise MissingColumns(
                f"source {self.source.id}: columns {', '.join(missing)} are the primary key or "
                "mapped to licenses but missing from the extracted data"
            )

    def validate(self, table: pa.Table) -> tuple[Any, pa.Table]:
        """Validate a batch with the suite: the GX result and the frame it was computed on."""
        arrow, frame = self.suite.frame(table)
        from great_expectations.validator.v1_validator import Validator

        validator = Validator(
            batch_definition=gx_batch_definition(),
            result_format=RESULT_FORMAT,
            batch_parameters={"dataframe": frame},
        )
        return validator.validate_expectation_suite(self.suite.suite), arrow

    def split(self, batch: pa.RecordBatch | pa.Table) -> GateResult:
        """Split a batch; raises :class:`MissingColumns` if mapped columns are absent."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        self._check_columns(table)
        if table.num_rows == 0:
            return GateResult(passed=table, quarantined=_held(table, [], []))
        result, frame = self.validate(table)
        failures: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
        for outcome in result.results:
            config = outcome.expectation_config
            index = config.meta["govx_index"]
            rule = self.suite.rules[index]
            info = outcome.exception_info or {}
            if info.get("raised_exception"):
                raise SuiteError(
                    f"source {self.source.id}: rule {rule.name} could not be evaluated: "
                    f"{info.get('exception_message')}"
                )
            if outcome.success:
                continue
            rows = np.asarray(outcome.result.get("unexpected_index_list") or [], dtype=np.int64)
            if not len(rows):
                raise SuiteError(
                    f"source {self.source.id}: rule {rule.name} failed without naming rows"
                )
            values = {
                name: pc.take(frame.column(name), pa.array(rows)).to_pylist() for name in rule.reads
            }
            for position, row in enumerate(rows.tolist()):
                message = rule.message({name: values[name][position] for name in rule.reads})
                failures[row].append((index, message, rule.label))
        keep = np.ones(table.num_rows, dtype=bool)
        keep[list(failures)] = False
        held_rows = np.flatnonzero(~keep)
        reasons, rules = [], []
        for row in held_rows.tolist():
            messages: list[str] = []
            labels: list[str] = []
            for _, message, label in sorted(failures[row], key=lambda item: item[0]):
                if message not in messages:
                    messages.append(message)
                if label not in labels:
                    labels.append(label)
            reasons.append(messages)
            rules.append(labels)
        mask = pa.array(keep, type=pa.bool_())
        return GateResult(
            passed=table.filter(mask),
            quarantined=_held(table.take(pa.array(held_rows)), reasons, rules),
            validation=result,
        )
