"""The deployment configuration: YAML files validated with pydantic into one :class:`Deployment`.

A deployment directory (``config/`` in the repo, ``$GOVX_CONFIG`` elsewhere) holds YAML files whose
top-level keys are sections: ``regions``, ``departments``, ``license_types``, ``sources`` and
``matters``. A section may live in any file, but only in one. Every error names the file, the key
path inside it and what is wrong, e.g.::

    config/sources.yaml: sources[1].connection: must be a connection id like 'gd_household_db'

Secrets never live here: a source names a *connection id* that resolves from the environment
(see :mod:`exchange.connections`).
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exchange.standards.holder_ids import HolderKind, InvalidIdentifier, validate_uscc
from exchange.standards.regions import Region, validate_region_code

__all__ = [
    "AlertsConfig",
    "ConfigError",
    "ConnectorConfig",
    "DatasetConfig",
    "DeletesConfig",
    "Department",
    "Deployment",
    "Expectation",
    "LicenseMapping",
    "LicenseType",
    "Material",
    "Matter",
    "MonitoringConfig",
    "QualityConfig",
    "SoftDelete",
    "SourceConfig",
    "Validity",
    "load_deployment",
]

SECTIONS = ("regions", "departments", "license_types", "datasets", "sources", "matters")
SLUG = r"^[a-z][a-z0-9_]{1,62}$"
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@yearly")


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists ``file: path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = len(problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([head, *("  " + p for p in problems)]))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionConfig(_Model):
    """A GB/T 2260 region of the deployment."""

    code: str
    name: str

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, value: Any) -> str:
        return validate_region_code(value)

    def to_region(self) -> Region:
        return Region(self.code, self.name)


class AlertsConfig(_Model):
    """Where a department hears about its sources' card changes (each change is sent once)."""

    webhook: str | None = Field(
        default=None, description="URL that receives a JSON POST per card change"
    )
    email: tuple[str, ...] = Field(
        default=(), description="addresses mailed per card change, through GOVX_SMTP_URL"
    )

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"an http:// or https:// URL, not {value!r}")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
                raise ValueError(f"not an e-mail address: {address!r}")
        return value


class Department(_Model):
    """A department at one level of government; its credit code issues licenses."""

    id: str = Field(pattern=SLUG)
    code: str = Field(description="unified social credit code of the department (GB 32100)")
    name: str
    region: str
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        try:
            return validate_uscc(value, "code")
        except InvalidIdentifier as exc:
            raise ValueError(f"not a valid unified social credit code: {exc.reason}") from None

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: Any) -> str:
        return validate_region_code(value)


class FaceField(_Model):
    """A field printed on the face of a certificate (照面信息)."""

    name: str = Field(pattern=SLUG)
    label: str


class Validity(_Model):
    """How long a license of a type is valid.

    ``permanent`` never expires; ``from_source`` takes valid-from/valid-to from the source's
    columns; ``years`` runs for N years from the issue date.
    """

    rule: Literal["permanent", "from_source", "years"]
    years: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"rule": value}
        if isinstance(value, dict) and "years" in value and "rule" not in value:
            return {"rule": "years", **value}
        return value

    @model_validator(mode="after")
    def _years(self) -> Validity:
        if (self.rule == "years") != (self.years is not None):
            raise ValueError("'years' is required with rule 'years' and only there")
        return self


class LicenseType(_Model):
    """An entry of the license-type catalogue (证照目录)."""

    id: str = Field(pattern=SLUG)
    code: str = Field(pattern=r"^[0-9A-Z]{6,32}$", description="catalogue type code")
    name: str
    holder_kind: HolderKind
    issuing_department: str
    validity: Validity = Validity(rule="permanent")
    sharing: Literal["unconditional", "conditional", "not_shared"] = "unconditional"
    face_fields: tuple[FaceField, ...] = ()


class DatasetConfig(_Model):
    """An entry of the resource catalogue (政务信息资源目录): a dataset the exchange keeps."""

    id: str = Field(pattern=SLUG)
    name: str
    department: str = Field(description="owner department id")
    sharing: Literal["unconditional", "conditional", "not_shared"]
    update_frequency: Literal["realtime", "hourly", "daily", "weekly", "monthly", "yearly"]
    description: str | None = None


class ConnectorConfig(_Model):
    """Which connector kind reads the source, with that kind's own options."""

    kind: str = Field(pattern=SLUG)
    options: dict[str, Any] = Field(default_factory=dict)


class LicenseMapping(_Model):
    """How the rows of a source's dataset become licenses of one type: column names per field."""

    type: str
    holder_id: str
    holder_name: str
    number: str
    issue_date: str
    valid_from: str | None = None
    valid_to: str | None = None
    status: str | None = None
    status_values: dict[str, Literal["valid", "expired", "revoked", "suspended"]] = Field(
        default_factory=dict,
        description="every source status value -> license status; a row with any other "
        "value is quarantined",
    )
    face: dict[str, str] = Field(default_factory=dict, description="face field -> column")
    optional: bool = Field(
        default=False,
        description="a row whose holder ID, number or issue date is empty simply has no "
        "license of this mapping (e.g. a birth record without a father) instead of being held",
    )

    @model_validator(mode="after")
    def _status_values(self) -> LicenseMapping:
        if self.status and not self.status_values:
            raise ValueError("'status' needs 'status_values' listing every value of the column")
        if self.status_values and not self.status:
            raise ValueError("'status_values' needs the 'status' column")
        return self

    def columns(self) -> set[str]:
        """Every source column this mapping reads."""
        named = [self.holder_id, self.holder_name, self.number, self.issue_date]
        named += [c for c in (self.valid_from, self.valid_to, self.status) if c]
        return set(named) | set(self.face.values())


class SoftDelete(_Model):
    """A column whose value marks a row the department has deleted (logically)."""

    column: str
    values: tuple[str, ...] = Field(
        min_length=1, description="values (compared as trimmed text) that mean deleted"
    )


class DeletesConfig(_Model):
    """How deletions in a department system reach the exchange."""

    soft_delete: SoftDelete | None = Field(
        default=None, description="a flag column: a flagged row deletes its key"
    )
    key_snapshot: bool = Field(
        default=False,
        description="on a full-refresh run, keys the exchange holds but the source no longer "
        "returns are deleted (hard deletes)",
    )
    snapshot_schedule: str | None = Field(
        default=None, description="cron or preset for a scheduled full-refresh snapshot run"
    )
    max_delete_fraction: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="a snapshot that would delete more than this share of the live keys fails "
        "instead (a truncated extract must not wipe a dataset)",
    )

    @field_validator("snapshot_schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return _check_schedule(value)

    @model_validator(mode="after")
    def _snapshot_needs_flag(self) -> DeletesConfig:
        if self.snapshot_schedule and not self.key_snapshot:
            raise ValueError("snapshot_schedule needs key_snapshot: true")
        return self


def _check_schedule(value: str | None) -> str | None:
    if value is None or value in SCHEDULE_PRESETS:
        return value
    from croniter import croniter  # Airflow's own cron parser

    if not croniter.is_valid(value):
        presets = ", ".join(SCHEDULE_PRESETS)
        raise ValueError(f"not a cron expression or one of {presets}: {value!r}")
    return value


class Expectation(_Model):
    """One extra Great Expectations expectation for a source's rows, by its GX class name."""

    type: str = Field(
        pattern=r"^expect_[a-z_]+$",
        description="a built-in GX expectation, snake case (expect_column_values_to_match_regex)",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)


class QualityConfig(_Model):
    """The quality gate's batch threshold and the source's extra expectations."""

    max_bad_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="a batch with a larger share of quarantined rows is held whole: nothing "
        "merged, the cursor stays, the source gets a red card",
    )
    min_rows_for_threshold: int = Field(
        default=20,
        ge=1,
        description="batches with fewer rows are never held whole (a few re-read rows at the "
        "cursor, one of them dirty, are no reason to stop a source); their bad rows are still "
        "quarantined",
    )
    expectations: tuple[Expectation, ...] = Field(
        default=(),
        description="extra built-in row-level GX expectations ({type: expect_..., kwargs}) "
        "added to the source's generated suite",
    )


class MonitoringConfig(_Model):
    """When a source's cards turn yellow or red."""

    late_after_minutes: int | None = Field(
        default=None,
        ge=1,
        description="minutes without a successful run after which the source is overdue (red); "
        "default: twice the period of the dataset's update frequency",
    )
    warn_fraction: float = Field(
        default=0.8,
        gt=0,
        lt=1,
        description="yellow once this share of the overdue time has passed without a success",
    )
    failures_red: int = Field(
        default=3, ge=1, description="consecutive failed runs that turn the card red"
    )
    volume_sigma: float = Field(
        default=3.0, gt=0, description="rows read outside mean +/- this many sigma -> yellow"
    )
    volume_history: int = Field(default=20, ge=3, description="runs the volume check looks at")
    min_pass_rate: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="a run whose loaded/read is below this -> yellow (below 1 - "
        "quality.max_bad_fraction it is red)",
    )


class SourceConfig(_Model):
    """A department system the exchange pulls from."""

    id: str = Field(pattern=SLUG)
    name: str
    department: str
    connector: ConnectorConfig
    connection: str = Field(pattern=SLUG, description="connection id: AIRFLOW_CONN_<ID>")
    dataset: str = Field(pattern=SLUG)
    primary_key: tuple[str, ...] = Field(min_length=1)
    cursor: str | None = Field(default=None, description="column that grows with every change")
    schedule: str | None = "@daily"
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="extraction attempts after a transient failure (connection lost, 5xx), "
        "with jittered exponential backoff; terminal errors are never retried",
    )
    schema_policy: Literal["evolve", "freeze", "quarantine"] = Field(
        default="evolve",
        description="what a run whose columns changed does: load (evolve), fail (freeze) or "
        "hold every row (quarantine)",
    )
    deletes: DeletesConfig = Field(default_factory=DeletesConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    licenses: tuple[LicenseMapping, ...] = ()

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return _check_schedule(value)


class Material(_Model):
    """A material a matter requires: a license type from the library, or the applicant brings it."""

    name: str
    license_type: str | None = None
    applicant_provides: bool = False
    reason: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Material:
        if (self.license_type is None) == (not self.applicant_provides):
            raise ValueError("give either 'license_type' or 'applicant_provides: true', not both")
        return self


class Matter(_Model):
    """A government service item (事项) and the materials it requires."""

    code: str = Field(pattern=r"^[0-9A-Za-z_.-]{2,64}$")
    name: str
    department: str
    materials: tuple[Material, ...] = Field(min_length=1)


class Deployment(_Model):
    """A whole validated deployment, with lookups by id."""

    regions: tuple[RegionConfig, ...] = Field(min_length=1)
    departments: tuple[Department, ...] = Field(min_length=1)
    license_types: tuple[LicenseType, ...] = ()
    datasets: tuple[DatasetConfig, ...] = ()
    sources: tuple[SourceConfig, ...] = ()
    matters: tuple[Matter, ...] = ()

    @cached_property
    def region_by_code(self) -> dict[str, Region]:
        return {r.code: r.to_region() for r in self.regions}

    @cached_property
    def department_by_id(self) -> dict[str, Department]:
        return {d.id: d for d in self.departments}

    @cached_property
    def license_type_by_id(self) -> dict[str, LicenseType]:
        return {t.id: t for t in self.license_types}

    @cached_property
    def dataset_by_id(self) -> dict[str, DatasetConfig]:
        return {d.id: d for d in self.datasets}

    @cached_property
    def source_by_id(self) -> dict[str, SourceConfig]:
        return {s.id: s for s in self.sources}

    @cached_property
    def matter_by_code(self) -> dict[str, Matter]:
        return {m.code: m for m in self.matters}

    def source(self, source_id: str) -> SourceConfig:
        """The source with this id; ``KeyError`` lists the known ones."""
        try:
            return self.source_by_id[source_id]
        except KeyError:
            known = ", ".join(sorted(self.source_by_id)) or "none"
            raise KeyError(f"unknown source {source_id!r} (configured: {known})") from None

    def cross_reference_problems(self) -> list[tuple[tuple[Any, ...], str]]:
        """Dangling references and duplicate ids, as (key path, message) pairs."""
        problems: list[tuple[tuple[Any, ...], str]] = []
        for section, key in (
            ("regions", "code"),
            ("departments", "id"),
            ("departments", "code"),
            ("license_types", "id"),
            ("license_types", "code"),
            ("datasets", "id"),
            ("sources", "id"),
            ("matters", "code"),
        ):
            seen: set[str] = set()
            for i, item in enumerate(getattr(self, section)):
                value = getattr(item, key)
                if value in seen:
                    problems.append(((section, i, key), f"duplicate {key} {value!r}"))
                seen.add(value)
        regions = self.region_by_code
        for code in regions:
            parent = regions[code].parent
            if parent is not None and parent not in regions:
                index = [r.code for r in self.regions].index(code)
                problems.append(
                    (("regions", index, "code"), f"parent region {parent} is not configured")
                )
        departments = self.department_by_id
        types = self.license_type_by_id
        for i, dept in enumerate(self.departments):
            if dept.region not in regions:
                problems.append((("departments", i, "region"), f"unknown region {dept.region!r}"))
        for i, ltype in enumerate(self.license_types):
            if ltype.issuing_department not in departments:
                problems.append(
                    (
                        ("license_types", i, "issuing_department"),
                        f"unknown department {ltype.issuing_department!r}",
                    )
                )
        for i, dataset in enumerate(self.datasets):
            if dataset.department not in departments:
                problems.append(
                    (("datasets", i, "department"), f"unknown department {dataset.department!r}")
                )
        for i, src in enumerate(self.sources):
            if self.datasets and src.dataset not in self.dataset_by_id:
                problems.append(
                    (("sources", i, "dataset"), f"dataset {src.dataset!r} is not in the catalogue")
                )
            if src.department not in departments:
                problems.append(
                    (("sources", i, "department"), f"unknown department {src.department!r}")
                )
            for j, mapping in enumerate(src.licenses):
                where = ("sources", i, "licenses", j)
                ltype = types.get(mapping.type)
                if ltype is None:
                    problems.append(((*where, "type"), f"unknown license type {mapping.type!r}"))
                    continue
                unknown_face = set(mapping.face) - {f.name for f in ltype.face_fields}
                if unknown_face:
                    problems.append(
                        (
                            (*where, "face"),
                            f"not face fields of {ltype.id}: {', '.join(sorted(unknown_face))}",
                        )
                    )
                if ltype.validity.rule == "from_source" and mapping.valid_to is None:
                    problems.append(
                        (
                            (*where, "valid_to"),
                            f"license type {ltype.id} takes its validity from the source: "
                            "name the column",
                        )
                    )
        for i, matter in enumerate(self.matters):
            if matter.department not in departments:
                problems.append(
                    (("matters", i, "department"), f"unknown department {matter.department!r}")
                )
            for j, material in enumerate(matter.materials):
                if material.license_type and material.license_type not in types:
                    problems.append(
                        (
                            ("matters", i, "materials", j, "license_type"),
                            f"unknown license type {material.license_type!r}",
                        )
                    )
        return problems


def _format_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML says it is an error;
    PyYAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_sections(directory: Path) -> tuple[dict[str, Any], dict[str, Path], list[str]]:
    data: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    problems: list[str] = []
    files = [
        p for p in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")) if p.is_file()
    ]
    if not files:
        raise ConfigError([f"{directory}: no YAML files found"])
    for path in files:
        try:
            content = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
        except UnicodeDecodeError as exc:
            problems.append(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problems.append(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}")
            continue
        if content is None:
            continue
        if not isinstance(content, dict):
            problems.append(
                f"{path}: top level must be a mapping of sections ({', '.join(SECTIONS)})"
            )
            continue
        for key, value in content.items():
            if key not in SECTIONS:
                problems.append(
                    f"{path}: {key}: unknown section (expected one of {', '.join(SECTIONS)})"
                )
            elif key in data:
                problems.append(f"{path}: {key}: section already defined in {origin[key]}")
            else:
                data[key] = value
                origin[key] = path
    return data, origin, problems


def load_deployment(directory: Path | str | None = None) -> Deployment:
    """Read and validate every YAML file of a deployment directory.

    Raises :class:`ConfigError` listing every problem with its file and key path.
    """
    from exchange.settings import config_dir

    directory = Path(directory) if directory is not None else config_dir()
    if not directory.is_dir():
        raise ConfigError([f"{directory}: configuration directory not found (set GOVX_CONFIG)"])
    data, origin, problems = _read_sections(directory)
    if problems:
        raise ConfigError(problems)

    def where(loc: tuple[Any, ...]) -> str:
        section = loc[0] if loc else None
        file = origin.get(section, directory) if isinstance(section, str) else directory
        return f"{file}: {_format_path(loc) or '(top level)'}"

    try:
        deployment = Deployment.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            message = err["msg"].removeprefix("Value error, ")
            if (
                err["type"] == "missing"
                and err["loc"]
                and err["loc"][0] in SECTIONS
                and len(err["loc"]) == 1
            ):
                lines.append(f"{directory}: {err['loc'][0]}: section is required")
            else:
                lines.append(f"{where(tuple(err['loc']))}: {message}")
        raise ConfigError(lines) from None
    cross = deployment.cross_reference_problems()
    if cross:
        raise ConfigError([f"{where(loc)}: {message}" for loc, message in cross])
    return deployment
