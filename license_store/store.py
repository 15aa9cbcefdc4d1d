"""The electronic license library's storage: bulk upsert with versions, lookups by holder and id.

:class:`LicenseStore` reaches SQLite (embedded default) or PostgreSQL (production) through a URL.
Writes are bulk and transactional: one :meth:`LicenseStore.upsert` call commits everything or
nothing. A record whose content is unchanged writes nothing; a changed one becomes a new version
with a new identifier (version part and check character), and every version is kept in
``license_versions``. Every database error leaves this module as a :mod:`license_store.errors`
exception (translated in :func:`license_store.database.translate_errors`).

Every version gets signed by its department (:meth:`LicenseStore.sign_pending`, see
:mod:`license_store.signatures`). The lifecycle -- :meth:`LicenseStore.suspend`,
:meth:`~LicenseStore.revoke`, :meth:`~LicenseStore.reinstate` and the daily
:meth:`~LicenseStore.expire_due` -- makes each status change a new version the same way, signs it
and audits it. A sync never lifts a status the lifecycle set: a revoked license stays revoked, a
suspended one stays suspended until reinstated, an expired one stays expired unless renewed. At a
node of the exchange, the lifecycle changes only the node's own licenses: one that was issued
below it and reached it by replication is changed at its issuing node
(:class:`NotTheIssuingNode`; the expiry skips it), so that node's next version does not clash.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.engine import Connection, Row

from exchange.db import begin_write, safe_url
from exchange.standards.holder_ids import HolderKind, mask_id
from exchange.standards.license_ids import LicenseIdentifier, parse_license_id
from license_store import migrations
from license_store.database import (
    JSONText,
    bulk_insert,
    create_store_engine,
    refresh_statistics,
    translate_errors,
    upsert_insert,
)
from license_store.errors import (
    ConflictError,
    LicenseNotFound,
    LicenseStoreError,
    SchemaNotCurrent,
)
from license_store.models import license_sequences, license_versions, licenses
from license_store.records import (
    License,
    LicenseRecord,
    LicenseVersion,
    canonical_json,
    content_of,
    effective_status,
    hash_text,
)
from license_store.signatures import (
    CHUNK_VERSIONS,
    MAX_BATCH_LEAVES,
    DepartmentResolver,
    SigningResult,
    StoredSignature,
    group_by_department,
    select_unsigned,
    sign_versions,
    signer_key,
    stored_signature,
    write_batch,
)

if TYPE_CHECKING:
    from exchange.config import Deployment
    from exchange.nodes import ChildNodes
    from license_store.audit import AuditEntry, AuditLog
    from license_store.signing import KeyRing

__all__ = [
    "CHINA_STANDARD_TIME",
    "ExpiryResult",
    "LicenseChange",
    "LicenseStore",
    "NotTheIssuingNode",
    "SignedVersion",
    "UpsertResult",
    "china_today",
    "select_holder_licenses",
]

log = logging.getLogger("govexchange.license_store")

DEFAULT_BATCH_SIZE = 2_000
MAX_SERIAL = 9_999_999
MAX_VERSION = 999
# Validity dates are Beijing dates: a license valid to 2025-06-30 expires at midnight there.
CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8), "CST")

# Columns an upsert copies from a record (the rest are identity, bookkeeping or derived).
_RECORD_COLUMNS = (
    "type_code",
    "type_name",
    "issuer_code",
    "issuer_name",
    "region_code",
    "holder_id",
    "holder_kind",
    "holder_name",
    "number",
    "issue_date",
    "valid_from",
    "valid_to",
    "status",
    "source_id",
    "run_id",
)
# A batch's holder look-up binds one parameter per record; stay under SQLite's 32766 limit.
_MAX_BATCH_SIZE = 10_000


def china_today() -> dt.date:
    """Today's date in China (UTC+8, no daylight saving)."""
    return dt.datetime.now(CHINA_STANDARD_TIME).date()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class LicenseChange:
    """One new version a write made: its identifier and holder (``repr`` masks the holder)."""

    license_id: str
    holder_id: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What an upsert did: licenses inserted, updated (new version) and left unchanged.

    ``changes`` lists the new versions (inserted and updated), for the audit trail.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    changes: tuple[LicenseChange, ...] = field(default=(), repr=False, compare=False)

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.changes + other.changes,
        )

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


def select_holder_licenses(holder_id: str) -> Select[Any]:
    """The statement :meth:`LicenseStore.licenses_for_holder` runs (served by the holder index)."""
    return select_licenses_by_holder().where(licenses.c.holder_id == holder_id)


def select_licenses_by_holder() -> Select[Any]:
    """The lookup's columns (:data:`LICENSE_COLUMNS`) in its order (holder, type code, issue
    date), without the condition on the holder."""
    return select(*(licenses.c[name] for name in LICENSE_COLUMNS)).order_by(
        licenses.c.holder_id, licenses.c.type_code, licenses.c.issue_date, licenses.c.id
    )


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; the store writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# The columns :func:`license_from_row` reads (the lookup fetches no more): what an upsert
# copies from a record but its provenance, and the identity, version and face.
LICENSE_COLUMNS = (
    "license_id",
    *(name for name in _RECORD_COLUMNS if name not in ("source_id", "run_id")),
    "version",
    "face",
    "updated_at",
)


def license_from_row(row: Mapping[str, Any], today: dt.date) -> License:
    """The license of a ``licenses`` row (a row mapping, or an asyncpg record)."""
    return License(
        license_id=row["license_id"],
        type_code=row["type_code"],
        type_name=row["type_name"],
        number=row["number"],
        issuer_code=row["issuer_code"],
        issuer_name=row["issuer_name"],
        region_code=row["region_code"],
        holder_id=row["holder_id"],
        holder_kind=row["holder_kind"],
        holder_code_type=HolderKind(row["holder_kind"]).code_type,
        holder_name=row["holder_name"],
        issue_date=row["issue_date"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        status=effective_status(row["status"], row["valid_to"], today),
        version=row["version"],
        face=dict(row["face"]),
        updated_at=_aware(row["updated_at"]),
    )


def licenses_by_holder(
    rows: Iterable[Mapping[str, Any]], today: dt.date
) -> dict[str, list[License]]:
    """Lookup rows (in the lookup's order) as holder ID -> that holder's licenses."""
    found: dict[str, list[License]] = {}
    for row in rows:
        found.setdefault(row["holder_id"], []).append(license_from_row(row, today))
    return found


def _shown_license_id(license_id: str) -> str:
    text = str(license_id)
    return text if len(text) <= 200 else text[:199] + "…"


class LicenseStore:
    """The license library on one database (SQLite or PostgreSQL), reached by URL.

    ``url`` defaults to :func:`exchange.settings.license_db_url`. ``today`` tells the date used to
    evaluate validity at read time (Beijing date by default). ``keyring`` and ``deployment`` are
    what signing uses (default: ``$GOVX_HOME/keys`` and the configured deployment), ``audit`` the
    audit log of lifecycle changes (default: this database's). With ``audit_changes`` every
    upsert also audits its new versions (the license step does). ``home`` is the data directory
    whose node identity and trusted child keys tell which licenses the lifecycle may change
    here (default ``$GOVX_HOME``; not a node: all of them). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        today: Callable[[], dt.date] = china_today,
        keyring: KeyRing | None = None,
        deployment: Deployment | None = None,
        audit: AuditLog | None = None,
        audit_changes: bool = False,
        home: Path | None = None,
    ) -> None:
        if url is None:
            from exchange.settings import license_db_url

            url = license_db_url()
        if not 1 <= batch_size <= _MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{_MAX_BATCH_SIZE}, got {batch_size}")
        self.url = safe_url(url)
        self._url = url
        self.batch_size = batch_size
        self._today = today
        self._keyring = keyring
        self._deployment = deployment
        self._audit = audit
        self._owns_audit = False
        self.audit_changes = audit_changes
        self._home = home
        with translate_errors(self.url):
            self._engine = create_store_engine(url)
        self._schema_checked = False

    def __repr__(self) -> str:
        return f"LicenseStore({self.url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool (and the audit log's, if the store opened it)."""
        if self._owns_audit and self._audit is not None:
            self._audit.close()
            self._audit, self._owns_audit = None, False
        self._engine.dispose()

    def _audit_log(self) -> AuditLog:
        if self._audit is None:
            from license_store.audit import AuditLog

            self._audit, self._owns_audit = AuditLog(self._url), True
        return self._audit

    def _signing_setup(
        self, keyring: KeyRing | None, deployment: Deployment | None
    ) -> tuple[KeyRing, DepartmentResolver]:
        if keyring is None:
            if self._keyring is None:
                from license_store.signing import KeyRing

                self._keyring = KeyRing()
            keyring = self._keyring
        if deployment is None:
            if self._deployment is None:
                from exchange.config import load_deployment

                self._deployment = load_deployment()
            deployment = self._deployment
        return keyring, DepartmentResolver(deployment)

    # -- schema -------------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Apply the migrations up to head."""
        migrations.upgrade(self._engine)
        self._schema_checked = True

    def is_current(self) -> bool:
        """Whether the schema is at this code's head revision."""
        return migrations.is_current(self._engine)

    def today(self) -> dt.date:
        """The date reads evaluate validity on (China Standard Time unless the store was given
        its own clock)."""
        return self._today()

    def check_schema(self) -> None:
        """Raise :class:`SchemaNotCurrent` unless the database is at this code's migration head
        (checked once per store)."""
        self._require_current_schema()

    def _require_current_schema(self) -> None:
        if self._schema_checked:
            return
        current = migrations.current_revision(self._engine)
        head = migrations.head_revision()
        if current != head:
            raise SchemaNotCurrent(
                f"license store at {self.url} is at schema revision {current or 'none'}, "
                f"this code needs {head}: run LicenseStore.upgrade() to apply the migrations"
            )
        self._schema_checked = True

    # -- connections --------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads in autocommit mode: no BEGIN and ROLLBACK round trips around
        a one-statement read."""
        with translate_errors(self.url):
            self._require_current_schema()
            with self._engine.connect() as conn:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
        with translate_errors(self.url):
            self._require_current_schema()
            with begin_write(self._engine) as conn:
                yield conn

    # -- writes -------------------------------------------------------------------------------

    def upsert(self, records: Iterable[LicenseRecord]) -> UpsertResult:
        """Insert new licenses, version changed ones, skip unchanged ones: all in one transaction.

        Records with the same natural key ``(type_code, holder_id, number)`` in one call: the
        last one wins and is counted once. The call holds its records in memory; feed very large
        loads as several calls (each one its own transaction). Raises :class:`ConflictError` when
        the data violates a constraint (also when a concurrent writer inserted the same license
        first: retrying then finds it), ``ValueError`` when a type or issuer code cannot form a
        license identifier; either way nothing of the call is written.
        """
        latest: dict[tuple[str, str, str], LicenseRecord] = {}
        for record in records:
            latest[record.natural_key] = record
        if not latest:
            return UpsertResult()
        pending = [_Pending(record) for record in latest.values()]
        now = _utc_now()
        with self._writing() as conn:
            new: list[_Pending] = []
            changed: list[_Pending] = []
            for batch in _batches(pending, self.batch_size):
                self._classify(conn, batch, new, changed)
            if new:
                self._assign_sequences(conn, new)
            for batch in _batches(new, self.batch_size):
                self._insert_new(conn, batch, now)
            for batch in _batches(changed, self.batch_size):
                self._update_changed(conn, batch, now)
        changes = tuple(
            LicenseChange(item.license_id, item.record.holder_id) for item in (*new, *changed)
        )
        result = UpsertResult(
            len(new), len(changed), len(pending) - len(new) - len(changed), changes
        )
        if self.audit_changes:
            self._audit_sync_changes(pending)
        log.info(
            "upserted %d licenses: %d inserted, %d updated, %d unchanged",
            result.total,
            result.inserted,
            result.updated,
            result.unchanged,
        )
        self._refresh_statistics(result)
        return result

    def _audit_sync_changes(self, pending: Sequence[_Pending]) -> None:
        """One ``change`` entry per holder and run: ``sync:<source>``, matter ``sync``, the run id
        as case, the holder's new license ids; all appended in one transaction.

        Appended after the store's commit: a crash in between loses these entries (the versions
        themselves keep their source and run in ``license_versions``).
        """
        changed: dict[tuple[str, str, str], list[str]] = {}
        for item in pending:
            if item.license_id:
                record = item.record
                key = (record.source_id, record.run_id, record.holder_id)
                changed.setdefault(key, []).append(item.license_id)
        audit = self._audit_log()
        audit.append(
            [
                audit.entry(
                    client_id=f"sync:{source_id}",
                    action="change",
                    holder_id=holder_id,
                    license_ids=license_ids,
                    matter="sync",
                    case_id=run_id,
                    result="ok",
                )
                for (source_id, run_id, holder_id), license_ids in changed.items()
            ]
        )

    def _refresh_statistics(self, result: UpsertResult) -> None:
        """After the commit, let PostgreSQL re-plan for a table that grew a lot (best effort)."""
        try:
            with translate_errors(self.url), self._engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                refresh_statistics(conn, licenses, result.inserted)
                refresh_statistics(conn, license_versions, result.inserted + result.updated)
        except LicenseStoreError as error:
            log.warning("could not refresh table statistics: %s", error)

    def _classify(
        self,
        conn: Connection,
        batch: Sequence[_Pending],
        new: list[_Pending],
        changed: list[_Pending],
    ) -> None:
        """Sort a batch into ``new`` and ``changed`` (unchanged ones go nowhere): one query."""
        # Both columns lead the holder index, so this is index look-ups on SQLite and
        # PostgreSQL alike (a row-value IN list makes SQLite scan the table).
        holders = sorted({item.record.holder_id for item in batch})
        types = sorted({item.record.type_code for item in batch})
        existing = {
            (row.type_code, row.holder_id, row.number): row
            for row in conn.execute(
                select(
                    licenses.c.id,
                    licenses.c.type_code,
                    licenses.c.holder_id,
                    licenses.c.number,
                    licenses.c.license_id,
                    licenses.c.version,
                    licenses.c.content_hash,
                    licenses.c.status,
                    licenses.c.license_base,
                ).where(licenses.c.holder_id.in_(holders), licenses.c.type_code.in_(types))
            )
        }
        today = self._today()
        set_by_lifecycle = self._lifecycle_statuses(conn, batch, existing)
        for item in batch:
            row = existing.get(item.record.natural_key)
            if row is None:
                new.append(item)
                continue
            lifecycle = set_by_lifecycle.get(row.license_base) == row.status
            held = _held_status(row.status, item.record, today, lifecycle=lifecycle)
            if held is not None and held != item.record.status:
                item.hold(held)
            if row.content_hash != item.digest:
                item.current = row
                changed.append(item)

    @staticmethod
    def _lifecycle_statuses(
        conn: Connection, batch: Sequence[_Pending], existing: dict[Any, Row[Any]]
    ) -> dict[str, str]:
        """license_base -> the status its latest lifecycle version set, for the licenses of the
        batch that are suspended or revoked and whose record says otherwise (few: one query)."""
        bases = sorted(
            row.license_base
            for item in batch
            if (row := existing.get(item.record.natural_key)) is not None
            and row.status in ("suspended", "revoked")
            and row.status != item.record.status
        )
        if not bases:
            return {}
        rows = conn.execute(
            select(license_versions.c.license_base, license_versions.c.content)
            .where(
                license_versions.c.license_base.in_(bases),
                license_versions.c.run_id == LIFECYCLE_RUN,
            )
            .order_by(license_versions.c.version)
        )
        return {row.license_base: row.content["status"] for row in rows}  # the latest wins

    def _assign_sequences(self, conn: Connection, new: Sequence[_Pending]) -> None:
        """Give every new license its sequence ``{year:04d}{serial:07d}``."""
        groups = Counter(item.sequence_group for item in new)
        # Lock the counters in one order so that concurrent writers cannot deadlock.
        next_serial = {
            group: self._allocate_serials(conn, group, groups[group]) for group in sorted(groups)
        }
        for item in new:
            serial = next_serial[item.sequence_group]
            next_serial[item.sequence_group] = serial + 1
            item.sequence = f"{item.record.issue_date.year:04d}{serial:07d}"

    def _allocate_serials(self, conn: Connection, group: tuple[str, str, int], count: int) -> int:
        """Reserve ``count`` serials for (type, issuer, year); returns the first one.

        One ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: on PostgreSQL it locks the counter
        row until the transaction ends, so concurrent writers never share a serial.
        """
        type_code, issuer_code, year = group
        insert = upsert_insert(conn.dialect.name)
        statement = insert(license_sequences).values(
            type_code=type_code, issuer_code=issuer_code, year=year, last_serial=count
        )
        statement = statement.on_conflict_do_update(
            index_elements=[
                license_sequences.c.type_code,
                license_sequences.c.issuer_code,
                license_sequences.c.year,
            ],
            set_={"last_serial": license_sequences.c.last_serial + statement.excluded.last_serial},
        ).returning(license_sequences.c.last_serial)
        last = conn.execute(statement).scalar_one()
        if last > MAX_SERIAL:
            raise ConflictError(
                f"license sequence exhausted for type {type_code}, issuer {issuer_code}, "
                f"year {year}: {last} > {MAX_SERIAL}"
            )
        return last - count + 1

    def _insert_new(self, conn: Connection, batch: Sequence[_Pending], now: dt.datetime) -> None:
        """Insert new licenses at version 1, with their first history entry."""
        identifiers = [
            LicenseIdentifier(item.record.type_code, item.record.issuer_code, item.sequence, 1)
            for item in batch
        ]
        bases = [identifier.base for identifier in identifiers]
        license_ids = [str(identifier) for identifier in identifiers]
        for item, license_id in zip(batch, license_ids, strict=True):
            item.license_id = license_id
        columns = _record_columns(batch)
        columns.update(
            license_base=bases,
            license_id=license_ids,
            sequence=[item.sequence for item in batch],
            version=[1] * len(batch),
            content_hash=[item.digest for item in batch],
            created_at=[now] * len(batch),
            updated_at=[now] * len(batch),
        )
        bulk_insert(conn, licenses, columns)
        bulk_insert(
            conn,
            license_versions,
            _version_columns(batch, bases, [1] * len(batch), license_ids, now),
        )

    def _update_changed(
        self, conn: Connection, batch: Sequence[_Pending], now: dt.datetime
    ) -> None:
        """Move changed licenses to their next version and record it in the history."""
        identifiers: list[LicenseIdentifier] = []
        for item in batch:
            current = item.current
            assert current is not None  # set by _classify for every changed license
            if current.version >= MAX_VERSION:
                raise ConflictError(
                    f"license {current.license_id} of holder {mask_id(item.record.holder_id)} "
                    f"has reached version {MAX_VERSION}"
                )
            identifiers.append(
                parse_license_id(current.license_id).with_version(current.version + 1)
            )
        license_ids = [str(identifier) for identifier in identifiers]
        for item, license_id in zip(batch, license_ids, strict=True):
            item.license_id = license_id
        versions = [identifier.version for identifier in identifiers]
        columns = _record_columns(batch)
        columns.update(
            b_id=[item.current.id for item in batch if item.current is not None],
            license_id=license_ids,
            version=versions,
            content_hash=[item.digest for item in batch],
            updated_at=[now] * len(batch),
        )
        updates = [
            dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)
        ]
        conn.execute(licenses.update().where(licenses.c.id == bindparam("b_id")), updates)
        bases = [identifier.base for identifier in identifiers]
        bulk_insert(
            conn, license_versions, _version_columns(batch, bases, versions, license_ids, now)
        )

    # -- reads --------------------------------------------------------------------------------

    def licenses_for_holder(self, holder_id: str) -> list[License]:
        """The holder's current licenses, by type code then issue date; ``[]`` for none.

        ``holder_id`` must be validated and normalised (:func:`exchange.standards.parse_holder_id`).
        """
        today = self._today()
        with self._reading() as conn:
            rows = conn.execute(select_holder_licenses(holder_id)).mappings().all()
        return [license_from_row(row, today) for row in rows]

    def licenses_for_holders(self, holder_ids: Sequence[str]) -> dict[str, list[License]]:
        """:meth:`licenses_for_holder` of several holders in one statement (at most
        :data:`_MAX_BATCH_SIZE`): holder ID -> licenses, holders without any left out."""
        if len(holder_ids) > _MAX_BATCH_SIZE:
            raise ValueError(f"at most {_MAX_BATCH_SIZE:,} holders at a time")
        today = self._today()
        statement = select_licenses_by_holder().where(licenses.c.holder_id.in_(holder_ids))
        with self._reading() as conn:
            rows = conn.execute(statement).mappings().all()
        return licenses_by_holder(rows, today)

    def _current_row(self, conn: Connection, license_id: str, *, lock: bool = False) -> Row[Any]:
        """The licenses row for any version's identifier, or :class:`LicenseNotFound`.

        ``lock`` holds the row for the transaction (``FOR UPDATE``; SQLite's writes are serial).
        """
        shown = _shown_license_id(license_id)
        try:
            identifier = parse_license_id(license_id)
        except ValueError as error:
            raise LicenseNotFound(f"no license {shown}: {error}") from None
        statement = select(licenses).where(licenses.c.license_base == identifier.base)
        if lock:
            statement = statement.with_for_update()
        row = conn.execute(statement).one_or_none()
        if row is None or identifier.version > row.version:
            raise LicenseNotFound(f"no license {shown}")
        return row

    def get(self, license_id: str) -> License:
        """The current version of the license that ``license_id`` (any of its versions) names."""
        today = self._today()
        with self._reading() as conn:
            row = self._current_row(conn, license_id)
        return license_from_row(row._mapping, today)

    def versions(self, license_id: str) -> list[LicenseVersion]:
        """Every stored version of the license ``license_id`` names, oldest first."""
        with self._reading() as conn:
            current = self._current_row(conn, license_id)
            rows = conn.execute(
                select(license_versions)
                .where(license_versions.c.license_base == current.license_base)
                .order_by(license_versions.c.version)
            ).all()
        return [
            LicenseVersion(
                license_id=row.license_id,
                version=row.version,
                content_hash=row.content_hash,
                content=dict(row.content),
                source_id=row.source_id,
                run_id=row.run_id,
                recorded_at=_aware(row.recorded_at),
            )
            for row in rows
        ]

    def count(self) -> int:
        """How many licenses are stored (current versions)."""
        with self._reading() as conn:
            return conn.execute(select(func.count()).select_from(licenses)).scalar_one()

    def signed_version(self, license_id: str) -> SignedVersion:
        """The current version of a license with what was signed and its stored signature."""
        today = self._today()
        with self._reading() as conn:
            row = self._current_row(conn, license_id)
            signed = conn.execute(
                select(license_versions.c.content).where(
                    license_versions.c.license_base == row.license_base,
                    license_versions.c.version == row.version,
                )
            ).scalar_one_or_none()
            signature = stored_signature(conn, row.license_base, row.version)
        return SignedVersion(
            license=license_from_row(row._mapping, today),
            stored_content=content_of(_record_of(row)),
            version_content=None if signed is None else dict(signed),
            signature=signature,
        )

    # -- signing ------------------------------------------------------------------------------

    def sign_pending(
        self, keyring: KeyRing | None = None, deployment: Deployment | None = None
    ) -> SigningResult:
        """Sign every version without a proof: Merkle batches of up to 4,096 per department.

        A department without a key gets one generated (logged as a WARNING). Versions are read
        in chunks of 32,768; a chunk's batches and their proofs commit in one transaction, so a
        crash leaves versions either signed or not, and the next call signs only those that are
        not. Versions whose issuer and type no configured department signs are left unsigned
        (WARNING with their count).
        """
        keyring, resolver = self._signing_setup(keyring, deployment)
        result = SigningResult()
        keys: dict[str, Any] = {}
        after = 0
        while True:
            with self._reading() as conn:
                rows = select_unsigned(conn, after=after, limit=CHUNK_VERSIONS)
            if not rows:
                break
            after = rows[-1].id
            groups, orphans = group_by_department(rows, resolver)
            batches: list[tuple[Any, list[list[str]], Sequence[Row[Any]]]] = []
            for department, members in sorted(groups.items()):
                if department not in keys:
                    keys[department] = signer_key(keyring, department)
                for start in range(0, len(members), MAX_BATCH_LEAVES):
                    chunk = members[start : start + MAX_BATCH_LEAVES]
                    batches.append((*sign_versions(department, keys[department], chunk), chunk))
            result += self._write_batches(batches)
            if orphans:
                log.warning(
                    "%d license versions left unsigned: no configured department has their "
                    "issuer code or license type",
                    len(orphans),
                )
                result += SigningResult(no_department=len(orphans))
        if result.signed:
            log.info("signed %d license versions in %d batches", result.signed, result.batches)
        return result

    def _write_batches(
        self, batches: Sequence[tuple[Any, list[list[str]], Sequence[Row[Any]]]]
    ) -> SigningResult:
        """Write signed batches and their proofs in one transaction."""
        if not batches:
            return SigningResult()
        try:
            with self._writing() as conn:
                for batch, proofs, rows in batches:
                    write_batch(conn, batch, rows, proofs)
        except ConflictError:
            log.info(
                "a concurrent signer signed some of these %d versions first; the next pass "
                "signs what is left",
                sum(len(rows) for _, _, rows in batches),
            )
            return SigningResult()
        return SigningResult(signed=sum(len(rows) for _, _, rows in batches), batches=len(batches))

    # -- lifecycle ----------------------------------------------------------------------------

    def suspend(self, license_id: str, *, reason: str, actor: str) -> License:
        """Suspend a valid license: a new version with status ``suspended``, signed and audited."""
        return self._change_status(license_id, "suspended", reason=reason, actor=actor)

    def revoke(self, license_id: str, *, reason: str, actor: str) -> License:
        """Revoke a license for good: a new version with status ``revoked``, signed and audited."""
        return self._change_status(license_id, "revoked", reason=reason, actor=actor)

    def reinstate(self, license_id: str, *, reason: str, actor: str) -> License:
        """Lift a suspension: a new version with status ``valid``; a revoked license stays so."""
        return self._change_status(license_id, "valid", reason=reason, actor=actor)

    def child_nodes(self) -> ChildNodes | None:
        """This deployment as a node and its trusted children, read now from the data directory
        (``None``: not a node). :class:`~exchange.nodes.NodeError` if ``node.json`` is
        unreadable: the lifecycle then refuses rather than guess."""
        from exchange.nodes import child_nodes

        if self._home is None:
            from exchange.settings import govx_home

            return child_nodes(govx_home())
        return child_nodes(self._home)

    def _change_status(self, license_id: str, status: str, *, reason: str, actor: str) -> License:
        reason, actor = _reference("reason", reason), _reference("actor", actor)
        today = self._today()
        nodes = self.child_nodes()
        with self._writing() as conn:
            row = self._current_row(conn, license_id, lock=True)
            _check_issued_here(row, nodes)
            _check_transition(row, effective_status(row.status, row.valid_to, today), status)
            item = _Pending(_record_of(row, status=status, run_id=LIFECYCLE_RUN))
            item.current = row
            self._update_changed(conn, [item], _utc_now())
        self.sign_pending()
        self._audit_changes([item], client_id=actor, matter="lifecycle", case_id=reason)
        log.info("license %s is now %s (%s by %s)", item.license_id, status, reason, actor)
        return self.get(item.license_id)

    def expire_due(self, today: dt.date | None = None, *, actor: str = "license_expiry") -> int:
        """:meth:`run_expiry`, returning only how many licenses it expired."""
        return self.run_expiry(today, actor=actor).expired

    def run_expiry(
        self, today: dt.date | None = None, *, actor: str = "license_expiry"
    ) -> ExpiryResult:
        """Turn every license stored as valid whose ``valid_to`` is before ``today`` into a new
        ``expired`` version (signed, audited with matter ``expiry``).

        ``today`` defaults to the store's date (Beijing). Idempotent: a second run finds none.
        At a node, licenses issued below it (see :meth:`child_nodes`) are skipped and counted:
        their issuing node expires them and the expired version comes up by replication.
        """
        today = today or self._today()
        now = _utc_now()
        run_id = f"expiry:{today.isoformat()}"
        nodes = self.child_nodes()
        due = (licenses.c.status == "valid") & (licenses.c.valid_to < today)
        expired: list[_Pending] = []
        skipped: Counter[str] = Counter()
        with self._writing() as conn:
            replicated: list[str] = []  # region codes whose licenses come from a child node
            if nodes is not None and nodes.children:
                for region_code, count in conn.execute(
                    select(licenses.c.region_code, func.count())
                    .where(due)
                    .group_by(licenses.c.region_code)
                ):
                    child = nodes.replicated_from(region_code)
                    if child is not None:
                        replicated.append(region_code)
                        skipped[child] += count
            statement = select(licenses).where(due)
            if replicated:
                statement = statement.where(licenses.c.region_code.not_in(sorted(replicated)))
            rows = conn.execute(statement.order_by(licenses.c.id).with_for_update()).all()
            for start in range(0, len(rows), self.batch_size):
                batch = []
                for row in rows[start : start + self.batch_size]:
                    item = _Pending(_record_of(row, status="expired", run_id=run_id))
                    item.current = row
                    batch.append(item)
                self._update_changed(conn, batch, now)
                expired.extend(batch)
        if expired:
            self.sign_pending()
            self._audit_changes(
                expired, client_id=actor, matter="expiry", case_id=today.isoformat()
            )
        result = ExpiryResult(len(expired), dict(sorted(skipped.items())))
        log.info(
            "expired %d licenses due before %s; skipped %d issued below this node",
            result.expired,
            today.isoformat(),
            result.skipped,
        )
        return result

    def _audit_changes(
        self, items: Sequence[_Pending], *, client_id: str, matter: str, case_id: str
    ) -> list[AuditEntry]:
        """One ``change`` entry per written license, appended in one transaction."""
        audit = self._audit_log()
        return audit.append(
            [
                audit.entry(
                    client_id=client_id,
                    action="change",
                    holder_id=item.record.holder_id,
                    license_ids=[item.license_id],
                    matter=matter,
                    case_id=case_id,
                    result="ok",
                )
                for item in items
            ]
        )


@dataclass(frozen=True, slots=True)
class SignedVersion:
    """A license's current version for verification: what the store says now, what was signed.

    ``stored_content`` is the content of the ``licenses`` row (what readers get),
    ``version_content`` the content recorded for that version (``None`` if its history row is
    gone), ``signature`` its batch and proof (``None`` when unsigned).
    """

    license: License
    stored_content: dict[str, Any] = field(repr=False)
    version_content: dict[str, Any] | None = field(repr=False)
    signature: StoredSignature | None


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    """What a run of the expiry did: ``expired`` licenses made expired versions; per trusted
    child node, how many due licenses it left to the node they were issued at."""

    expired: int
    skipped_by_child: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """Due licenses left to their issuing node (issued below this one)."""
        return sum(self.skipped_by_child.values())

    def summary(self) -> str:
        """One line: how many licenses expired, and how many were left to the nodes below."""
        line = f"{self.expired} licenses expired"
        if self.skipped:
            nodes = ", ".join(f"node {n}: {count}" for n, count in self.skipped_by_child.items())
            line += (
                f"; {self.skipped} skipped, issued below this node ({nodes}): their issuing "
                "node expires them and the change comes up by replication"
            )
        return line


class NotTheIssuingNode(ConflictError):
    """A lifecycle change asked of a node for a license issued below it, which it holds only
    because the license was replicated up: the issuing node makes the change (its new version
    then travels up), otherwise the two nodes' next versions would clash."""

    code = "not_the_issuing_node"  # the Problem code of an HTTP route that performs changes

    def __init__(self, license_id: str, *, node: str, issued_in: str, via: str) -> None:
        if via == issued_in:
            origin, where = f"at node {issued_in}", f"node {issued_in}"
        else:
            origin = f"in region {issued_in}, below node {via},"
            where = f"node {issued_in} (or node {via}, if {issued_in} has no node of its own)"
        super().__init__(
            f"license {license_id} was issued {origin} and reached node {node} by replication: "
            "lifecycle changes are made at the issuing node and come up from there; "
            f"run it at {where}"
        )
        self.license_id = license_id
        self.node = node
        self.issued_in = issued_in
        self.via = via


LIFECYCLE_RUN = "lifecycle"  # the run_id of versions a lifecycle action made
# status -> the effective statuses it may follow
_TRANSITIONS = {
    "suspended": ("valid",),
    "revoked": ("valid", "suspended", "expired"),
    "valid": ("suspended",),
}


def _check_issued_here(row: Row[Any], nodes: ChildNodes | None) -> None:
    """Raise :class:`NotTheIssuingNode` if this node holds the license as a replica."""
    if nodes is None:
        return
    via = nodes.replicated_from(row.region_code)
    if via is not None:
        raise NotTheIssuingNode(
            row.license_id, node=nodes.region, issued_in=row.region_code, via=via
        )


def _check_transition(row: Row[Any], current: str, status: str) -> None:
    """Raise :class:`ConflictError` unless a license now ``current`` may become ``status``."""
    if current in _TRANSITIONS[status]:
        return
    shown = f"license {row.license_id} of holder {mask_id(row.holder_id)}"
    if current == "revoked":
        raise ConflictError(
            f"{shown} is revoked, and revocation is final: it cannot be "
            f"{'reinstated' if status == 'valid' else 'changed'}; issue a new license instead"
        )
    if current == status != "valid":
        raise ConflictError(f"{shown} is already {status}")
    wanted = {"suspended": "suspend", "revoked": "revoke", "valid": "reinstate"}[status]
    raise ConflictError(
        f"cannot {wanted} {shown}: it is {current} "
        f"(allowed from {' or '.join(_TRANSITIONS[status])})"
    )


def _reference(name: str, value: str) -> str:
    """A lifecycle reason or actor as audited: 1..64 characters, ID numbers masked."""
    from exchange.standards.holder_ids import mask_ids_in_text

    text = mask_ids_in_text(str(value).strip())
    if not 1 <= len(text) <= 64:
        raise ValueError(
            f"{name} must have 1..64 characters (a case or document reference), got {len(text)}"
        )
    return text


class _Pending:
    """A record on its way in: its canonical content and hash, and what the store decided."""

    __slots__ = ("canonical", "current", "digest", "license_id", "record", "sequence")

    def __init__(self, record: LicenseRecord) -> None:
        self.current: Row[Any] | None = None  # the stored row, for a changed license
        self.sequence = ""  # assigned for a new license
        self.license_id = ""  # assigned when written
        self._set(record)

    def _set(self, record: LicenseRecord) -> None:
        self.record = record
        self.canonical = JSONText(canonical_json(content_of(record)))
        self.digest = hash_text(self.canonical)

    def hold(self, status: str) -> None:
        """Keep the stored ``status`` instead of the record's (see :func:`_held_status`)."""
        self._set(replace(self.record, status=status))

    @property
    def sequence_group(self) -> tuple[str, str, int]:
        record = self.record
        return (record.type_code, record.issuer_code, record.issue_date.year)


def _held_status(
    stored: str, record: LicenseRecord, today: dt.date, *, lifecycle: bool
) -> str | None:
    """The stored status a sync's record may not change, or ``None``.

    ``lifecycle`` says the stored status was set by a lifecycle action (not by a department's
    data, which may undo its own deletion or suspension). Such a revocation is final; such a
    suspension is lifted only by :meth:`LicenseStore.reinstate` (a record may still revoke
    it). An expired license stays expired while the record's own dates say it is expired too
    (a renewal with a later ``valid_to`` makes it valid again).
    """
    if lifecycle and stored == "revoked":
        return "revoked"
    if lifecycle and stored == "suspended" and record.status == "valid":
        return "suspended"
    if stored == "expired" and effective_status(record.status, record.valid_to, today) == "expired":
        return "expired"
    return None


def _record_of(row: Row[Any], **changes: Any) -> LicenseRecord:
    """The record a stored ``licenses`` row holds, with ``changes`` applied."""
    values = {name: getattr(row, name) for name in _RECORD_COLUMNS}
    values["face"] = dict(row.face)
    values.update(changes)
    return LicenseRecord(**values)


def _record_columns(batch: Sequence[_Pending]) -> dict[str, list[Any]]:
    """The ``licenses`` columns a record fills (its content and provenance), column-wise."""
    records = [item.record for item in batch]
    columns = {name: [getattr(record, name) for record in records] for name in _RECORD_COLUMNS}
    columns["face"] = [dict(record.face) for record in records]
    return columns


def _version_columns(
    batch: Sequence[_Pending],
    bases: list[str],
    versions: list[int],
    license_ids: list[str],
    now: dt.datetime,
) -> dict[str, list[Any]]:
    """The ``license_versions`` rows of a batch, column-wise."""
    return {
        "license_base": bases,
        "version": versions,
        "license_id": license_ids,
        "content_hash": [item.digest for item in batch],
        "content": [item.canonical for item in batch],
        "source_id": [item.record.source_id for item in batch],
        "run_id": [item.record.run_id for item in batch],
        "recorded_at": [now] * len(batch),
    }


def _batches(items: Sequence[_Pending], size: int) -> Iterator[Sequence[_Pending]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
