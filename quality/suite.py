"""The Great Expectations suite of a source, generated from the catalogue and its YAML.

For every license type a source feeds, the catalogue says what a row must hold; each rule below
becomes one built-in GX 1.x expectation (``meta.govx_rule`` names it):

- ``<pk>.present`` -- the primary key is given (``expect_column_values_to_not_be_null``);
- ``<col>.required`` -- the holder ID, holder name, number and issue date are given
  (``expect_column_values_to_not_be_null``; blanks count as missing);
- ``<col>.resident_id`` / ``<col>.credit_code`` -- the holder ID passes GB 11643 / GB 32100:
  length, format, birth date, check character and a region code in use in the birth year
  (``expect_column_values_to_be_null`` on the computed problem column ``govx.ric(<col>)`` /
  ``govx.uscc(<col>)``, see :mod:`quality.checks`);
- ``<col>.holder_kind`` -- a legal person's holder ID is not a resident ID
  (``expect_column_values_to_be_null`` on ``govx.resident_id(<col>)``);
- ``<col>.birth_date_matches`` -- the birth date inside a resident ID equals the row's birth-date
  column (``expect_column_pair_values_to_be_equal``), where the license is the identity
  document itself (its number is the holder ID) and prints a ``birth_date`` face field;
- ``<col>.date`` -- a date column holds dates (``expect_column_values_to_be_null`` on
  ``govx.date_error(<col>)``);
- ``<valid_to>.after_issue`` -- a license does not end before it is issued
  (``expect_column_pair_values_a_to_be_greater_than_b``, ``or_equal``);
- ``<number>.max_length`` -- a number fits the license store
  (``expect_column_value_lengths_to_be_between``);
- ``<number>.unique`` -- two keys of one batch never carry the same license number
  (``expect_column_values_to_be_unique`` over the last row of each key);
- ``<status>.known`` -- a status column holds a mapped value
  (``expect_column_values_to_be_in_set``);
- ``<col>.<expectation type>`` -- each of ``quality.expectations`` in ``config/sources.yaml``.

A mapping marked ``optional`` is checked only on rows it applies to (a GX ``row_condition`` on
``govx.applies(<type>#<n>)``). Suites are built once per process and source configuration.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from exchange.config import Deployment, LicenseMapping, SourceConfig
from exchange.standards.holder_ids import HolderKind, mask_id, mask_ids_in_text
from license_store.records import MAX_NUMBER_LENGTH
from quality import checks

__all__ = ["LATEST", "Rule", "SourceSuite", "SuiteError", "source_suite"]

LATEST = "govx.latest"
"""Frame column: whether the row is its key's last one in the batch (the version that counts)."""

Message = Callable[[dict[str, Any]], str]


class SuiteError(ValueError):
    """A source's extra expectations cannot be built or evaluated: a configuration error."""


@dataclass(frozen=True)
class Rule:
    """One rule of a source: its GX expectation and how a failing row's reason is worded."""

    name: str
    expectation: Any  # a great_expectations Expectation
    message: Message
    reads: tuple[str, ...]  # frame columns the message needs

    @property
    def label(self) -> str:
        """How a quarantined row names the rule: ``id_number.resident_id (expect_...)``."""
        return f"{self.name} ({self.expectation.expectation_type})"


@dataclass
class _Column:
    """A frame column: its name and how it is computed from the batch."""

    name: str
    compute: Callable[[pa.Table, dict[str, pa.Array]], pa.Array]


@dataclass
class SourceSuite:
    """A source's rules, the frame they validate, and the GX suite that holds them."""

    source_id: str
    rules: list[Rule] = field(default_factory=list)
    columns: dict[str, _Column] = field(default_factory=dict)
    suite: Any = None  # great_expectations.ExpectationSuite once built

    def frame(self, table: pa.Table) -> tuple[pa.Table, pd.DataFrame]:
        """The columns the expectations read, computed from the batch: as Arrow, and as the
        numpy-backed pandas frame GX validates (dates as ``datetime64``, text as objects)."""
        computed: dict[str, pa.Array] = {}
        for column in self.columns.values():
            computed[column.name] = column.compute(table, computed)
        arrow = pa.table(computed)
        return arrow, arrow.to_pandas(date_as_object=False, ignore_metadata=True)


def _chunked(table: pa.Table, column: str) -> pa.Array:
    values = table.column(column)
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _is_text(values: pa.Array) -> bool:
    return pa.types.is_string(values.type) or pa.types.is_large_string(values.type)


def _checked_values(column: str) -> Callable[[pa.Table, dict[str, pa.Array]], pa.Array]:
    """A source column as checked: text trimmed and blank text as null, other types as they are."""

    def compute(table: pa.Table, _: dict[str, pa.Array]) -> pa.Array:
        values = _chunked(table, column)
        if not _is_text(values):
            return values
        return pc.if_else(
            checks.blank(values), pa.scalar(None, pa.string()), checks.trimmed_text(values)
        )

    return compute


def _latest(primary_key: tuple[str, ...]) -> Callable[[pa.Table, dict[str, pa.Array]], pa.Array]:
    def compute(table: pa.Table, _: dict[str, pa.Array]) -> pa.Array:
        keys = table.select(list(primary_key)).to_pandas()
        return pa.array(~keys.duplicated(keep="last").to_numpy(), pa.bool_())

    return compute


def _applies(mapping: LicenseMapping) -> Callable[[pa.Table, dict[str, pa.Array]], pa.Array]:
    """Whether an ``optional`` mapping applies to each row (see :func:`quality.gate.applies`)."""

    def compute(table: pa.Table, _: dict[str, pa.Array]) -> pa.Array:
        given = [
            pc.invert(checks.blank(_chunked(table, column)))
            for column in (mapping.holder_id, mapping.number, mapping.issue_date)
        ]
        return pc.and_(pc.and_(given[0], given[1]), given[2])

    return compute


class _Builder:
    """Collects rules (deduplicated by what they check) and the frame columns they need."""

    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        self.out = SourceSuite(source.id)
        self.keys: dict[tuple, int] = {}

    def column(
        self, name: str, compute: Callable[[pa.Table, dict[str, pa.Array]], pa.Array]
    ) -> str:
        if name not in self.out.columns:
            self.out.columns[name] = _Column(name, compute)
        return name

    def value(self, column: str) -> str:
        return self.column(column, _checked_values(column))

    def ids(self, column: str) -> str:
        return self.column(
            f"govx.id({column})", lambda t, _: checks.normalised_ids(_chunked(t, column))
        )

    def ric(self, column: str) -> str:
        ids = self.ids(column)
        return self.column(f"govx.ric({column})", lambda _, c: checks.ric_problems(c[ids]))

    def uscc(self, column: str) -> str:
        ids = self.ids(column)
        return self.column(f"govx.uscc({column})", lambda _, c: checks.uscc_problems(c[ids]))

    def dates(self, column: str) -> tuple[str, str]:
        """The frame columns of a date column: ``govx.date(col)`` and ``govx.date_error(col)``."""
        date, error = f"govx.date({column})", f"govx.date_error({column})"
        if date not in self.out.columns:

            def parse(table: pa.Table, computed: dict[str, pa.Array]) -> pa.Array:
                parsed, computed[error] = checks.dates(_chunked(table, column))
                return parsed

            self.column(date, parse)
            self.column(error, lambda _, c: c[error])
        return date, error

    def condition(self, mapping: LicenseMapping, index: int) -> Any:
        if not mapping.optional:
            return None
        from great_expectations.expectations.row_conditions import Column

        name = self.column(f"govx.applies({mapping.type}#{index})", _applies(mapping))
        return Column(name) == True  # noqa: E712 -- a GX condition, not a comparison

    def add(
        self,
        key: tuple,
        name: str,
        expectation_class: str,
        message: Message,
        reads: tuple[str, ...] = (),
        condition: Any = None,
        **kwargs: Any,
    ) -> None:
        """Add a rule once: a repeat only widens an earlier conditional rule to every row."""
        import great_expectations.expectations as gxe

        if key in self.keys:
            index = self.keys[key]
            rule = self.out.rules[index]
            if condition is None and rule.expectation.row_condition is not None:
                self.out.rules[index] = Rule(
                    rule.name, _expectation(gxe, rule, None), rule.message, rule.reads
                )
            return
        if condition is not None:
            kwargs["row_condition"] = condition
        expectation = getattr(gxe, expectation_class)(meta={"govx_rule": name}, **kwargs)
        self.keys[key] = len(self.out.rules)
        self.out.rules.append(Rule(name, expectation, message, reads))


def _expectation(gxe: Any, rule: Rule, condition: Any) -> Any:
    config = rule.expectation.model_dump(
        exclude={"id", "row_condition", "condition_parser", "rendered_content", "notes"},
        exclude_none=True,
    )
    kwargs = {k: v for k, v in config.items() if k in type(rule.expectation).model_fields}
    if condition is not None:
        kwargs["row_condition"] = condition
    return type(rule.expectation)(**kwargs)


def _required_rule(b: _Builder, column: str, condition: Any) -> None:
    b.add(
        ("required", column),
        f"{column}.required",
        "ExpectColumnValuesToNotBeNull",
        lambda _r, c=column: f"{c}: missing",
        condition=condition,
        column=b.value(column),
    )


def _holder_rules(b: _Builder, mapping: LicenseMapping, kind: HolderKind, condition: Any) -> None:
    column = mapping.holder_id
    ids = b.ids(column)
    _required_rule(b, column, condition)
    if kind is HolderKind.NATURAL:
        problems, reasons, rule = b.ric(column), checks.RIC_PROBLEMS, "resident_id"
    else:
        problems, reasons, rule = b.uscc(column), checks.USCC_PROBLEMS, "credit_code"

    def invalid(row: dict[str, Any], c: str = column, p: str = problems) -> str:
        value = row[ids]
        reason = reasons[row[p]].format(length=len(value))
        return f"{c}: {reason} ({mask_id(value)})"

    b.add(
        (rule, column),
        f"{column}.{rule}",
        "ExpectColumnValuesToBeNull",
        invalid,
        reads=(ids, problems),
        condition=condition,
        column=problems,
    )
    if kind is HolderKind.LEGAL:
        ric = b.ric(column)
        looks = b.column(
            f"govx.resident_id({column})",
            lambda _, c: pc.if_else(
                pc.and_(pc.is_null(c[ric]), pc.invert(checks.blank(c[ids]))),
                pa.scalar("resident_id"),
                pa.scalar(None, pa.string()),
            ),
        )
        b.add(
            ("holder_kind", column),
            f"{column}.holder_kind",
            "ExpectColumnValuesToBeNull",
            lambda r, c=column: (
                f"{c}: a resident identity number where a credit code is expected "
                f"({mask_id(r[ids])})"
            ),
            reads=(ids,),
            condition=condition,
            column=looks,
        )


def _birth_date_column(mapping: LicenseMapping, deployment: Deployment) -> str | None:
    """The column holding the holder's own birth date, if the row has one.

    Only an identity document (its number is the holder's resident ID) prints the holder's
    birth date; a birth certificate's ``birth_date`` is the baby's, not its holder's.
    """
    kind = deployment.license_type_by_id[mapping.type].holder_kind
    if kind is not HolderKind.NATURAL or mapping.number != mapping.holder_id:
        return None
    return mapping.face.get("birth_date")


def _mapping_rules(
    b: _Builder, mapping: LicenseMapping, index: int, deployment: Deployment
) -> None:
    kind = deployment.license_type_by_id[mapping.type].holder_kind
    condition = b.condition(mapping, index)
    _holder_rules(b, mapping, kind, condition)
    for column in (mapping.holder_name, mapping.number, mapping.issue_date):
        _required_rule(b, column, condition)
    parsed: dict[str, str] = {}
    for column in (mapping.issue_date, mapping.valid_from, mapping.valid_to):
        if column is None:
            continue
        parsed[column], error = b.dates(column)
        b.add(
            ("date", column),
            f"{column}.date",
            "ExpectColumnValuesToBeNull",
            lambda r, c=column, e=error: f"{c}: {mask_ids_in_text(r[e])}",
            reads=(error,),
            condition=condition,
            column=error,
        )
    if mapping.valid_to:
        until, issued = parsed[mapping.valid_to], parsed[mapping.issue_date]
        b.add(
            ("after_issue", mapping.valid_to, mapping.issue_date),
            f"{mapping.valid_to}.after_issue",
            "ExpectColumnPairValuesAToBeGreaterThanB",
            lambda r, c=mapping.valid_to, u=until, i=issued: (
                f"{c}: ends {r[u]} before issue date {r[i]}"
            ),
            reads=(until, issued),
            condition=condition,
            column_A=until,
            column_B=issued,
            or_equal=True,
            ignore_row_if="either_value_is_missing",
        )
    number = b.value(mapping.number)
    b.add(
        ("max_length", mapping.number),
        f"{mapping.number}.max_length",
        "ExpectColumnValueLengthsToBeBetween",
        lambda _r, c=mapping.number: f"{c}: longer than {MAX_NUMBER_LENGTH} characters",
        condition=condition,
        column=number,
        max_value=MAX_NUMBER_LENGTH,
    )
    if mapping.status:
        _status_rule(b, mapping, condition)
    birth = _birth_date_column(mapping, deployment)
    if birth:
        in_id = b.column(
            f"govx.birth_date({mapping.holder_id})",
            lambda _, c, col=mapping.holder_id: pc.if_else(
                pc.is_null(c[f"govx.ric({col})"]),
                checks.ric_birth_dates(c[f"govx.id({col})"]),
                pa.scalar(None, pa.date32()),
            ),
        )
        stated, error = b.dates(birth)
        b.add(
            ("birth_date_matches", mapping.holder_id, birth),
            f"{birth}.birth_date_matches",
            "ExpectColumnPairValuesToBeEqual",
            lambda r, c=birth, h=mapping.holder_id, ids=f"govx.id({mapping.holder_id})": (
                f"{c}: differs from the birth date in {h} ({mask_id(r[ids])})"
            ),
            reads=(f"govx.id({mapping.holder_id})",),
            condition=condition,
            column_A=stated,
            column_B=in_id,
            ignore_row_if="either_value_is_missing",
        )
    _unique_rule(b, mapping, index, number)


def _status_rule(b: _Builder, mapping: LicenseMapping, condition: Any) -> None:
    column = mapping.status or ""
    status = b.column(
        f"govx.status({column})",
        lambda t, _: pc.fill_null(checks.trimmed_text(_chunked(t, column)), ""),
    )
    known = ", ".join(mapping.status_values)
    b.add(
        ("known", column, tuple(sorted(mapping.status_values))),
        f"{column}.known",
        "ExpectColumnValuesToBeInSet",
        lambda r, c=column, s=status, k=known: (
            f"{c}: unknown status {mask_ids_in_text(r[s][:32])!r} (mapped: {k})"
        ),
        reads=(status,),
        condition=condition,
        column=status,
        value_set=list(mapping.status_values),
    )


def _unique_rule(b: _Builder, mapping: LicenseMapping, index: int, number: str) -> None:
    from great_expectations.expectations.row_conditions import Column

    latest = b.column(LATEST, _latest(b.source.primary_key))
    if mapping.optional:
        applies = f"govx.applies({mapping.type}#{index})"
        scope = b.column(
            f"govx.latest_applies({mapping.type}#{index})",
            lambda _, c: pc.and_(c[LATEST], c[applies]),
        )
    else:
        scope = latest
    key = ", ".join(b.source.primary_key)
    b.add(
        ("unique", mapping.number),
        f"{mapping.number}.unique",
        "ExpectColumnValuesToBeUnique",
        lambda r, c=mapping.number: (
            f"{c}: the same number as another {key} in this batch ({mask_id(r[number])})"
        ),
        reads=(number,),
        condition=Column(scope) == True,  # noqa: E712 -- a GX condition
        column=number,
    )


def _extra_rules(b: _Builder) -> None:
    """The source's ``quality.expectations``: built-in row-level GX expectations."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    for number, item in enumerate(b.source.quality.expectations):
        class_name = "".join(part.title() for part in item.type.split("_"))
        expectation_class = getattr(gxe, class_name, None)
        if expectation_class is None or not issubclass(
            expectation_class,
            ColumnMapExpectation | ColumnPairMapExpectation | MulticolumnMapExpectation,
        ):
            raise SuiteError(
                f"source {b.source.id}: quality.expectations[{number}]: {item.type} is not a "
                "built-in row-level Great Expectations expectation"
            )
        kwargs = dict(item.kwargs)
        named = [kwargs.get(k) for k in ("column", "column_A", "column_B")]
        named += list(kwargs.get("column_list") or [])
        columns = [c for c in named if isinstance(c, str)]
        for column in columns:
            b.value(column)
        label = ",".join(columns) or "row"
        try:
            expectation_class(**kwargs)
        except Exception as exc:
            raise SuiteError(
                f"source {b.source.id}: quality.expectations[{number}] ({item.type}): {exc}"
            ) from None
        b.add(
            ("extra", number),
            f"{label}.{item.type}",
            class_name,
            lambda _r, c=label, t=item.type: f"{c}: fails {t}",
            **kwargs,
        )


def _build(source: SourceConfig, deployment: Deployment) -> SourceSuite:
    b = _Builder(source)
    for column in source.primary_key:
        b.add(
            ("required", column),
            f"{column}.present",
            "ExpectColumnValuesToNotBeNull",
            lambda _r, c=column: f"{c}: primary key missing",
            column=b.value(column),
        )
    for index, mapping in enumerate(source.licenses):
        _mapping_rules(b, mapping, index, deployment)
    _extra_rules(b)
    b.column(LATEST, _latest(source.primary_key))
    return b.out


_LOCK = threading.Lock()
_SUITES: dict[str, SourceSuite] = {}
_CONTEXT: dict[str, Any] = {}


def gx_batch_definition() -> Any:
    """The process's ephemeral GX context's pandas batch definition (created once)."""
    with _LOCK:
        if "batch" not in _CONTEXT:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            asset = context.data_sources.add_pandas("govx").add_dataframe_asset("batch")
            _CONTEXT["context"] = context
            _CONTEXT["batch"] = asset.add_batch_definition_whole_dataframe("whole batch")
        return _CONTEXT["batch"]


def _fingerprint(source: SourceConfig, deployment: Deployment) -> str:
    kinds = {
        m.type: deployment.license_type_by_id[m.type].holder_kind.value for m in source.licenses
    }
    text = json.dumps([source.model_dump(mode="json"), kinds], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def source_suite(source: SourceConfig, deployment: Deployment) -> SourceSuite:
    """The source's suite, built once per process and configuration (GX context included)."""
    key = f"{source.id}.{_fingerprint(source, deployment)}"
    gx_batch_definition()
    with _LOCK:
        if key not in _SUITES:
            import great_expectations as gx

            built = _build(source, deployment)
            for index, rule in enumerate(built.rules):
                rule.expectation.meta["govx_index"] = index
            suite = gx.ExpectationSuite(
                name=key,
                expectations=[rule.expectation for rule in built.rules],
                meta={"govx_source": source.id},
            )
            built.suite = _CONTEXT["context"].suites.add(suite)
            _SUITES[key] = built
        return _SUITES[key]
