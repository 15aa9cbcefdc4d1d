"""The license store's half of upward replication: what a node sends its parent, and applying it.

A node sends its parent every license version its store gained, in the order the versions were
written (``license_versions.id``). The sender keeps a plan of its packages in
``exchange_outbox``: package ``seq`` holds the versions with ``after_id < id <= through_id`` whose
license type may leave the node. Versions are never changed once written, so a package whose
files were lost (a crash while packaging) is made again from its plan with the same rows.

Each row of a package is one version: its identity, its content as the canonical JSON text the
store keeps (and its department signed), its provenance and, when it is signed, the signed batch
and the version's inclusion proof. The receiver (:func:`apply_package`), in one transaction:

- checks the sequence number against ``exchange_inbox``: an applied one is acknowledged and
  ignored, a gap is refused with the number expected (:class:`SequenceGap`);
- brings each license to the newest version the package holds, never back to an older one;
- adds the versions, signed batches and proofs it does not have yet;
- records the package as the sender's last.

Applying is idempotent and order-safe: replaying a package changes nothing, and a license ends
at its highest version whichever way its versions arrived. A parent therefore holds exactly the
union of its descendants' current licenses (and their histories from the first package on).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    func,
    select,
    type_coerce,
)
from sqlalchemy.engine import Connection

from license_store.database import bulk_insert, upsert_insert
from license_store.errors import ConflictError, LicenseStoreError
from license_store.models import (
    exchange_inbox,
    exchange_outbox,
    license_proofs,
    license_versions,
    licenses,
    signature_batches,
)
from license_store.store import LICENSE_COLUMNS

if TYPE_CHECKING:
    from license_store.store import LicenseStore

__all__ = [
    "PACKAGE_SCHEMA",
    "AppliedPackage",
    "Backlog",
    "InboxPosition",
    "OutboxEntry",
    "PackageInvalid",
    "SequenceGap",
    "apply_package",
    "backlog",
    "inbox_advance",
    "inbox_expects",
    "inbox_positions",
    "mark_delivered",
    "outbox_entries",
    "package_rows",
    "plan_dataset_packages",
    "plan_packages",
    "planned_runs",
]

log = logging.getLogger("govexchange.replication")

DEFAULT_PACKAGE_ROWS = 200_000
"""Versions per package at most: a package is read into memory whole on both sides."""

_UTC = pa.timestamp("us", tz="UTC")
PACKAGE_SCHEMA = pa.schema(
    [
        ("license_base", pa.string()),
        ("version", pa.int32()),
        ("license_id", pa.string()),
        ("sequence", pa.string()),
        ("content_hash", pa.string()),
        ("content", pa.string()),  # canonical JSON, the bytes the department signed
        ("source_id", pa.string()),
        ("run_id", pa.string()),
        ("recorded_at", _UTC),
        ("created_at", _UTC),  # the license's first version, at the sender
        ("batch_id", pa.string()),  # null: the version is not signed (yet) at the sender
        ("department", pa.string()),
        ("key_id", pa.string()),
        ("algorithm", pa.string()),
        ("root", pa.string()),
        ("signature", pa.string()),
        ("leaf_count", pa.int32()),
        ("signed_at", _UTC),
        ("leaf_index", pa.int32()),
        ("proof", pa.string()),  # JSON text
    ]
)
"""The columns of a ``licenses`` package: one row per license version."""

_BATCH_COLUMNS = ("department", "key_id", "algorithm", "root", "signature", "leaf_count")


class PackageInvalid(LicenseStoreError):
    """A package whose rows are not what a licenses package holds (nothing was applied)."""


class SequenceGap(LicenseStoreError):
    """A package arrived before the ones it follows; ``expected`` is the number to send next."""

    def __init__(self, sender: str, seq: int, expected: int) -> None:
        super().__init__(
            f"package {seq} from node {sender} leaves a gap: the next one expected is {expected}"
        )
        self.sender = sender
        self.seq = seq
        self.expected = expected


@dataclass(frozen=True)
class OutboxEntry:
    """One planned package to the parent (a row of ``exchange_outbox``)."""

    seq: int
    receiver: str
    after_id: int
    through_id: int
    rows: int
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    kind: str = "licenses"
    run_id: str | None = None
    """The sync run a ``dataset`` package carries."""


@dataclass(frozen=True)
class AppliedPackage:
    """What applying a package did: ``duplicate`` if it was applied before (then nothing)."""

    sender: str
    seq: int
    duplicate: bool
    rows: int = 0
    licenses_changed: int = 0


# -- the sender ------------------------------------------------------------------------------


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def _entry(row: Any) -> OutboxEntry:
    return OutboxEntry(
        seq=row.seq,
        receiver=row.receiver,
        after_id=row.after_id,
        through_id=row.through_id,
        rows=row.rows,
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        delivered_at=_aware(row.delivered_at),
        kind=row.kind,
        run_id=row.run_id,
    )


def _written_through(conn: Connection) -> int:
    """The highest version id below which every version is committed.

    On PostgreSQL ids come from a sequence in the order writers insert, not the order they
    commit: a SHARE lock waits for the writers in flight, so no lower id can still appear.
    SQLite writes one transaction at a time.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE license_versions IN SHARE MODE")
    return conn.execute(select(func.coalesce(func.max(license_versions.c.id), 0))).scalar_one()


def _outbox_position(conn: Connection) -> tuple[int, int]:
    """The last planned package's number and the license watermark (the highest version id
    planned), with the plan locked against a concurrent planner until the transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE exchange_outbox IN SHARE ROW EXCLUSIVE MODE")
    seq, through = conn.execute(
        select(
            func.coalesce(func.max(exchange_outbox.c.seq), 0),
            func.coalesce(func.max(exchange_outbox.c.through_id), 0),
        )
    ).one()
    return int(seq), int(through)


def planned_runs(store: LicenseStore) -> set[str]:
    """The sync runs planned in a ``dataset`` package already (each goes once)."""
    with store._reading() as conn:
        return set(
            conn.execute(
                select(exchange_outbox.c.run_id).where(exchange_outbox.c.run_id.is_not(None))
            ).scalars()
        )


def plan_dataset_packages(
    store: LicenseStore, receiver: str, runs: Sequence[tuple[str, int]]
) -> list[OutboxEntry]:
    """Plan a ``dataset`` package for each committed sync run of ``runs`` (run id, row
    versions) not planned before, in the order given; returns the new entries."""
    planned: list[OutboxEntry] = []
    if not runs:
        return planned
    with store._writing() as conn:
        seq, through = _outbox_position(conn)
        known = set(
            conn.execute(
                select(exchange_outbox.c.run_id).where(exchange_outbox.c.run_id.is_not(None))
            ).scalars()
        )
        now = dt.datetime.now(dt.UTC)
        for run_id, rows in runs:
            if run_id in known:
                continue
            seq += 1
            entry = OutboxEntry(seq, receiver, through, through, rows, now, None, "dataset", run_id)
            conn.execute(
                exchange_outbox.insert().values(
                    seq=seq,
                    receiver=receiver,
                    after_id=through,
                    through_id=through,
                    rows=rows,
                    created_at=now,
                    kind="dataset",
                    run_id=run_id,
                )
            )
            known.add(run_id)
            planned.append(entry)
    return planned


def _shareable(statement: Any, excluded_types: Collection[str]) -> Any:
    if excluded_types:
        return statement.where(licenses.c.type_code.not_in(sorted(excluded_types)))
    return statement


def plan_packages(
    store: LicenseStore,
    receiver: str,
    *,
    excluded_types: Collection[str] = (),
    max_rows: int = DEFAULT_PACKAGE_ROWS,
) -> list[OutboxEntry]:
    """Plan packages for every version written since the last planned one; returns the new
    entries (none if nothing new may leave the node).

    Versions of ``excluded_types`` (license type codes shared with no one) are never packaged.
    A version written while this runs goes into the next plan.
    """
    if max_rows < 1:
        raise ValueError(f"a package holds at least one row, got max_rows={max_rows}")
    planned: list[OutboxEntry] = []
    with store._writing() as conn:
        seq, after = _outbox_position(conn)
        ceiling = _written_through(conn)
        now = dt.datetime.now(dt.UTC)
        while after < ceiling:
            ids = (
                conn.execute(
                    _shareable(
                        select(license_versions.c.id)
                        .join(licenses, licenses.c.license_base == license_versions.c.license_base)
                        .where(license_versions.c.id > after, license_versions.c.id <= ceiling)
                        .order_by(license_versions.c.id)
                        .limit(max_rows),
                        excluded_types,
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                break  # only unshareable versions are left: nothing to send
            through = ids[-1] if len(ids) == max_rows else ceiling
            seq += 1
            entry = OutboxEntry(seq, receiver, after, through, len(ids), now, None)
            conn.execute(
                exchange_outbox.insert().values(
                    seq=seq,
                    receiver=receiver,
                    after_id=after,
                    through_id=through,
                    rows=len(ids),
                    created_at=now,
                )
            )
            planned.append(entry)
            after = through
    return planned


def outbox_entries(store: LicenseStore, *, pending_only: bool = False) -> list[OutboxEntry]:
    """The planned packages by number (only those not delivered yet with ``pending_only``)."""
    statement = select(exchange_outbox).order_by(exchange_outbox.c.seq)
    if pending_only:
        statement = statement.where(exchange_outbox.c.delivered_at.is_(None))
    with store._reading() as conn:
        return [_entry(row) for row in conn.execute(statement)]


@dataclass(frozen=True)
class Backlog:
    """What waits for the parent: packages and license versions, and the oldest's time."""

    packages: int
    rows: int
    oldest_created_at: dt.datetime | None
    last_delivered_at: dt.datetime | None

    def oldest_age_s(self, now: dt.datetime | None = None) -> float | None:
        """Seconds the oldest waiting package has waited (None when none waits)."""
        if self.oldest_created_at is None:
            return None
        now = now or dt.datetime.now(dt.UTC)
        return max(0.0, (now - self.oldest_created_at).total_seconds())


@dataclass(frozen=True)
class InboxPosition:
    """The last package applied from one child node."""

    sender: str
    last_seq: int
    rows: int
    applied_at: dt.datetime | None


def backlog(store: LicenseStore) -> Backlog:
    """The outbox's backlog (from the plan: packages not acknowledged by the parent yet)."""
    pending = exchange_outbox.c.delivered_at.is_(None)
    with store._reading() as conn:
        waiting = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(exchange_outbox.c.rows), 0),
                func.min(exchange_outbox.c.created_at),
            ).where(pending)
        ).one()
        delivered = conn.execute(select(func.max(exchange_outbox.c.delivered_at))).scalar()
    return Backlog(waiting[0], int(waiting[1]), _aware(waiting[2]), _aware(delivered))


def inbox_positions(store: LicenseStore) -> list[InboxPosition]:
    """Each child node's last applied package, by region code."""
    with store._reading() as conn:
        found = conn.execute(select(exchange_inbox).order_by(exchange_inbox.c.sender)).all()
    return [
        InboxPosition(row.sender, row.last_seq, row.rows, _aware(row.applied_at))
        for row in found
        if row.last_seq > 0
    ]


def mark_delivered(store: LicenseStore, seq: int) -> None:
    """Record that the parent acknowledged package ``seq`` (and every one before it)."""
    with store._writing() as conn:
        conn.execute(
            exchange_outbox.update()
            .where(exchange_outbox.c.seq <= seq, exchange_outbox.c.delivered_at.is_(None))
            .values(delivered_at=dt.datetime.now(dt.UTC))
        )


def package_rows(
    store: LicenseStore, entry: OutboxEntry, *, excluded_types: Collection[str] = ()
) -> pa.Table:
    """The rows of a planned package (:data:`PACKAGE_SCHEMA`), by version id."""
    sqlite = store._engine.dialect.name == "sqlite"

    def time(column: Any) -> Any:
        # SQLite keeps times as UTC text: read as is, parsed by Arrow (not row by row)
        return type_coerce(column, String()).label(column.name) if sqlite else column

    statement = _shareable(
        select(
            license_versions.c.license_base,
            license_versions.c.version,
            license_versions.c.license_id,
            licenses.c.sequence,
            license_versions.c.content_hash,
            cast(license_versions.c.content, Text).label("content"),
            license_versions.c.source_id,
            license_versions.c.run_id,
            time(license_versions.c.recorded_at),
            time(licenses.c.created_at),
            license_proofs.c.batch_id,
            *(signature_batches.c[name] for name in _BATCH_COLUMNS),
            time(signature_batches.c.signed_at),
            license_proofs.c.leaf_index,
            cast(license_proofs.c.proof, Text).label("proof"),
        )
        .join(licenses, licenses.c.license_base == license_versions.c.license_base)
        .outerjoin(
            license_proofs,
            (license_proofs.c.license_base == license_versions.c.license_base)
            & (license_proofs.c.version == license_versions.c.version),
        )
        .outerjoin(signature_batches, signature_batches.c.batch_id == license_proofs.c.batch_id)
        .where(license_versions.c.id > entry.after_id, license_versions.c.id <= entry.through_id)
        .order_by(license_versions.c.id),
        excluded_types,
    )
    names = PACKAGE_SCHEMA.names
    with store._reading() as conn:
        rows = conn.execute(statement).all()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = []
    for name, values in zip(names, columns, strict=True):
        field = PACKAGE_SCHEMA.field(name)
        if field.type == _UTC and sqlite:
            array = pa.array(values, pa.string()).cast(pa.timestamp("us")).cast(_UTC)
        else:
            array = pa.array(values, type=field.type)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=PACKAGE_SCHEMA)


# -- the receiver ----------------------------------------------------------------------------


_STAGE_TYPES = {"version": Integer(), "leaf_count": Integer(), "leaf_index": Integer()}
_STAGE = Table(
    "govx_stage",
    MetaData(),
    *(Column(field.name, _STAGE_TYPES.get(field.name, Text())) for field in PACKAGE_SCHEMA),
    Column("latest", Integer()),
    prefixes=["TEMPORARY"],
)
"""Where a package's rows wait inside the applying transaction: its columns as text (times in
SQLAlchemy's SQLite format, which PostgreSQL reads too), and whether the row is its license's
newest version in the package."""

# The ``licenses`` columns of a staged version, read from its content.
# every licenses column that comes from a version's content: the lookup's columns but the
# identity and bookkeeping ones
_CONTENT_FIELDS = tuple(
    name for name in LICENSE_COLUMNS if name not in ("license_id", "version", "updated_at")
)
_DATE_FIELDS = ("issue_date", "valid_from", "valid_to")


def _sql(dialect: str) -> dict[str, str]:
    """The merge statements for ``dialect`` (``sqlite`` or ``postgresql``)."""
    pg = dialect == "postgresql"

    def field(name: str) -> str:
        return f"c.{name}" if pg else f"json_extract(s.content, '$.{name}')"

    def at(name: str) -> str:
        return f"(s.{name} || '+00')::timestamptz" if pg else f"s.{name}"

    # PostgreSQL parses each content once, into typed columns
    record = ", ".join(
        f"{name} {'date' if name in _DATE_FIELDS else 'json' if name == 'face' else 'text'}"
        for name in _CONTENT_FIELDS
    )
    source = (
        f"govx_stage s CROSS JOIN LATERAL jsonb_to_record(s.content::jsonb) AS c({record})"
        if pg
        else "govx_stage s"
    )
    content = "s.content::json" if pg else "s.content"
    names = (
        "license_base, license_id, sequence, version, content_hash, source_id, run_id, "
        f"created_at, updated_at, {', '.join(_CONTENT_FIELDS)}"
    )
    updated = [
        name.strip()
        for name in names.split(",")
        if name.strip() not in ("license_base", "created_at")
    ]
    return {
        "clash": (
            "SELECT v.license_id FROM license_versions v JOIN govx_stage s "
            "ON v.license_base = s.license_base AND v.version = s.version "
            "WHERE v.content_hash <> s.content_hash LIMIT 1"
        ),
        "licenses": (
            f"INSERT INTO licenses ({names}) "
            "SELECT s.license_base, s.license_id, s.sequence, s.version, s.content_hash, "
            f"s.source_id, s.run_id, {at('created_at')}, {at('recorded_at')}, "
            f"{', '.join(field(name) for name in _CONTENT_FIELDS)} "
            f"FROM {source} WHERE s.latest = 1 "
            "ON CONFLICT (license_base) DO UPDATE SET "
            f"{', '.join(f'{name} = excluded.{name}' for name in updated)} "
            "WHERE licenses.version < excluded.version"
        ),
        "versions": (
            "INSERT INTO license_versions (license_base, version, license_id, content_hash, "
            "content, source_id, run_id, recorded_at, signed) "
            "SELECT s.license_base, s.version, s.license_id, s.content_hash, "
            f"{content}, s.source_id, s.run_id, {at('recorded_at')}, "
            "s.batch_id IS NOT NULL FROM govx_stage s "  # signed: its proof comes with it
            "WHERE true ON CONFLICT (license_base, version) DO NOTHING"
        ),
        "batches": (
            "INSERT INTO signature_batches (batch_id, department, key_id, algorithm, root, "
            "signature, leaf_count, signed_at) "
            "SELECT DISTINCT s.batch_id, s.department, s.key_id, s.algorithm, s.root, "
            f"s.signature, s.leaf_count, {at('signed_at')} FROM govx_stage s "
            "WHERE s.batch_id IS NOT NULL ON CONFLICT (batch_id) DO NOTHING"
        ),
        "proofs": (
            "INSERT INTO license_proofs (license_base, version, batch_id, leaf_index, proof) "
            "SELECT s.license_base, s.version, s.batch_id, s.leaf_index, "
            f"{'s.proof::json' if pg else 's.proof'} FROM govx_stage s "
            "WHERE s.batch_id IS NOT NULL ON CONFLICT (license_base, version) DO NOTHING"
        ),
    }


def _latest(table: pa.Table) -> pa.Array:
    """For each row: is it the newest version of its license in the package?"""
    newest = table.group_by("license_base").aggregate([("version", "max")])
    joined = (
        table.select(["license_base", "version"])
        .append_column("row", pa.array(range(table.num_rows), pa.int64()))
        .join(newest, "license_base")
    )
    joined = joined.sort_by("row")
    return pc.cast(pc.equal(joined.column("version"), joined.column("version_max")), pa.int32())


def _times_as_text(column: pa.ChunkedArray) -> pa.Array:
    """UTC times as SQLAlchemy's SQLite text (``2026-11-29 01:47:14.123456``). A package's
    times repeat (one per write, one per signed batch): each distinct one is formatted once."""
    encoded = column.combine_chunks().dictionary_encode()
    text = pc.strftime(encoded.dictionary, format="%Y-%m-%d %H:%M:%S")
    return pc.take(text, encoded.indices)


def _staged_columns(table: pa.Table) -> dict[str, list[Any]]:
    """The package's columns as the stage takes them: times as text, the newest flag added."""
    columns: dict[str, list[Any]] = {}
    for field in PACKAGE_SCHEMA:
        column = table.column(field.name)
        if field.type == _UTC:
            column = _times_as_text(column)
        columns[field.name] = column.to_pylist()
    columns["latest"] = _latest(table).to_pylist()
    return columns


def _inbox_position(conn: Connection, sender: str) -> int:
    """The sender's last applied package, its inbox row locked until the transaction ends."""
    insert = upsert_insert(conn.dialect.name)
    conn.execute(
        insert(exchange_inbox)
        .values(sender=sender, last_seq=0, rows=0)
        .on_conflict_do_nothing(index_elements=[exchange_inbox.c.sender])
    )
    return conn.execute(
        select(exchange_inbox.c.last_seq).where(exchange_inbox.c.sender == sender).with_for_update()
    ).scalar_one()


def inbox_expects(store: LicenseStore, sender: str, seq: int) -> bool:
    """Whether package ``seq`` from ``sender`` is the next one to apply: False if it was
    applied before (a replay); :class:`SequenceGap` if it would leave a gap."""
    with store._reading() as conn:
        last = conn.execute(
            select(exchange_inbox.c.last_seq).where(exchange_inbox.c.sender == sender)
        ).scalar()
    last = last or 0
    if seq <= last:
        return False
    if seq != last + 1:
        raise SequenceGap(sender, seq, last + 1)
    return True


def inbox_advance(store: LicenseStore, sender: str, seq: int, rows: int) -> bool:
    """Record package ``seq`` from ``sender`` as applied, if it is the next one (for packages
    applied outside the store: a ``dataset`` package's run). False if another delivery of it
    got there first; :class:`SequenceGap` if it would leave a gap."""
    with store._writing() as conn:
        last = _inbox_position(conn, sender)
        if seq <= last:
            return False
        if seq != last + 1:
            raise SequenceGap(sender, seq, last + 1)
        _record_applied(conn, sender, seq, rows)
    return True


def _record_applied(conn: Connection, sender: str, seq: int, rows: int) -> None:
    """Package ``seq`` from ``sender`` is the last applied (in the applying transaction)."""
    conn.execute(
        exchange_inbox.update()
        .where(exchange_inbox.c.sender == sender)
        .values(
            last_seq=seq,
            rows=exchange_inbox.c.rows + rows,
            applied_at=dt.datetime.now(dt.UTC),
        )
    )


def apply_package(store: LicenseStore, sender: str, seq: int, table: pa.Table) -> AppliedPackage:
    """Apply package ``seq`` from node ``sender`` (already checked: see
    :func:`exchange.packages.read_package`) in one transaction.

    An applied ``seq`` returns ``duplicate=True`` and writes nothing; one past the next expected
    raises :class:`SequenceGap`; rows that violate the store's constraints raise
    :class:`~license_store.errors.ConflictError`, with nothing written.
    """
    where = f"{sender}-{seq:012d}"
    if table.schema.names != PACKAGE_SCHEMA.names:
        raise PackageInvalid(f"package {where}: its columns are not a licenses package's")
    _check_content(table, where)
    with store._writing() as conn:
        last = _inbox_position(conn, sender)
        if seq <= last:
            log.info("package %s was applied before: acknowledged, ignored", where)
            return AppliedPackage(sender, seq, duplicate=True)
        if seq != last + 1:
            raise SequenceGap(sender, seq, last + 1)
        changed = _merge(conn, table, where) if table.num_rows else 0
        _record_applied(conn, sender, seq, table.num_rows)
    log.debug(
        "applied package %s: %d versions, %d licenses new or newer",
        where,
        table.num_rows,
        changed,
    )
    return AppliedPackage(
        sender, seq, duplicate=False, rows=table.num_rows, licenses_changed=changed
    )


def _check_content(table: pa.Table, where: str) -> None:
    """Each version's content must hash to its ``content_hash``: the hash the store keeps, and
    the content the department signed, travel together unchanged."""
    hashes = table.column("content_hash").to_pylist()
    for number, text in enumerate(table.column("content").to_pylist()):
        if text is None or hashlib.sha256(text.encode("utf-8")).hexdigest() != hashes[number]:
            raise PackageInvalid(
                f"package {where}: row {number}'s content does not match its content hash"
            )


def _merge(conn: Connection, table: pa.Table, where: str) -> int:
    """Stage the package in a temporary table and merge it into the store; licenses changed."""
    sql = _sql(conn.dialect.name)
    _STAGE.create(conn)
    try:
        bulk_insert(conn, _STAGE, _staged_columns(table))
        clash = conn.exec_driver_sql(sql["clash"]).scalar()
        if clash is not None:
            raise ConflictError(
                f"package {where}: license {clash} differs from the one here (the same "
                "identifier was issued twice, by two nodes)"
            )
        changed = conn.exec_driver_sql(sql["licenses"]).rowcount
        conn.exec_driver_sql(sql["versions"])
        conn.exec_driver_sql(sql["batches"])
        conn.exec_driver_sql(sql["proofs"])
    finally:
        conn.exec_driver_sql("DROP TABLE IF EXISTS govx_stage")
    return max(changed, 0)
