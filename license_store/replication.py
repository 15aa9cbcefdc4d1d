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
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Column, MetaData, Table, Text, cast, func, select, true
from sqlalchemy.engine import Connection

from license_store.database import JSONText, bulk_insert, upsert_insert
from license_store.errors import ConflictError, LicenseStoreError
from license_store.models import (
    exchange_inbox,
    exchange_outbox,
    license_proofs,
    license_versions,
    licenses,
    signature_batches,
)

if TYPE_CHECKING:
    from license_store.store import LicenseStore

__all__ = [
    "PACKAGE_SCHEMA",
    "AppliedPackage",
    "OutboxEntry",
    "SequenceGap",
    "apply_package",
    "mark_delivered",
    "outbox_entries",
    "package_rows",
    "plan_packages",
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
        last = conn.execute(
            select(exchange_outbox.c.seq, exchange_outbox.c.through_id)
            .order_by(exchange_outbox.c.seq.desc())
            .limit(1)
        ).first()
        seq, after = (last.seq, last.through_id) if last is not None else (0, 0)
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
            license_versions.c.recorded_at,
            licenses.c.created_at,
            license_proofs.c.batch_id,
            *(signature_batches.c[name] for name in _BATCH_COLUMNS),
            signature_batches.c.signed_at,
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
        if field.type == _UTC:
            values = [_aware(value) for value in values]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=PACKAGE_SCHEMA)


# -- the receiver ----------------------------------------------------------------------------


def _stage(name: str, source: Table, names: Collection[str], **extra: Any) -> Table:
    """A temporary table with ``source``'s columns ``names`` (and ``extra`` ones), no keys."""
    columns = [
        Column(column.name, column.type) for column in source.columns if column.name in names
    ]
    columns += [Column(key, type_) for key, type_ in extra.items()]
    return Table(name, MetaData(), *columns, prefixes=["TEMPORARY"])


_LICENSE_NAMES = (
    "license_base",
    "license_id",
    "type_code",
    "type_name",
    "issuer_code",
    "issuer_name",
    "sequence",
    "version",
    "region_code",
    "holder_id",
    "holder_kind",
    "holder_name",
    "number",
    "issue_date",
    "valid_from",
    "valid_to",
    "status",
    "face",
    "content_hash",
    "source_id",
    "run_id",
    "created_at",
    "updated_at",
)
_CONTENT_NAMES = (
    "type_code",
    "type_name",
    "issuer_code",
    "issuer_name",
    "region_code",
    "holder_id",
    "holder_kind",
    "holder_name",
    "number",
    "status",
)
_VERSION_NAMES = (
    "license_base",
    "version",
    "license_id",
    "content_hash",
    "content",
    "source_id",
    "run_id",
    "recorded_at",
)


def _date(text: str | None) -> dt.date | None:
    return None if text is None else dt.date.fromisoformat(text)


def _latest(table: pa.Table) -> pa.Table:
    """Each license's newest version in the package (rows sorted by base, version down)."""
    ordered = table.sort_by([("license_base", "ascending"), ("version", "descending")])
    bases = ordered.column("license_base")
    if len(bases) < 2:
        return ordered
    first = pc.not_equal(bases.slice(1), bases.slice(0, len(bases) - 1))
    keep = pa.concat_arrays([pa.array([True]), first.combine_chunks()])
    return ordered.filter(keep)


def _license_columns(latest: pa.Table, where: str) -> dict[str, list[Any]]:
    """The ``licenses`` columns of each license's newest version, from its content."""
    columns: dict[str, list[Any]] = {name: [] for name in _LICENSE_NAMES}
    for name in ("license_base", "license_id", "sequence", "version", "content_hash"):
        columns[name] = latest.column(name).to_pylist()
    for name in ("source_id", "run_id", "created_at"):
        columns[name] = latest.column(name).to_pylist()
    columns["updated_at"] = latest.column("recorded_at").to_pylist()
    for number, text in enumerate(latest.column("content").to_pylist()):
        try:
            content = json.loads(text)
            for name in _CONTENT_NAMES:
                columns[name].append(content[name])
            columns["issue_date"].append(_date(content["issue_date"]))
            columns["valid_from"].append(_date(content["valid_from"]))
            columns["valid_to"].append(_date(content["valid_to"]))
            columns["face"].append(content["face"])
        except (TypeError, KeyError, ValueError) as error:
            raise LicenseStoreError(
                f"package {where}: row {number} has unreadable license content "
                f"({type(error).__name__})"
            ) from None
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


def apply_package(store: LicenseStore, sender: str, seq: int, table: pa.Table) -> AppliedPackage:
    """Apply package ``seq`` from node ``sender`` (already checked: see
    :func:`exchange.packages.read_package`) in one transaction.

    An applied ``seq`` returns ``duplicate=True`` and writes nothing; one past the next expected
    raises :class:`SequenceGap`; rows that violate the store's constraints raise
    :class:`~license_store.errors.ConflictError`, with nothing written.
    """
    where = f"{sender}-{seq:012d}"
    if table.schema.names != PACKAGE_SCHEMA.names:
        raise LicenseStoreError(f"package {where}: columns differ from a licenses package's")
    with store._writing() as conn:
        last = _inbox_position(conn, sender)
        if seq <= last:
            log.info("package %s was applied before: acknowledged, ignored", where)
            return AppliedPackage(sender, seq, duplicate=True)
        if seq != last + 1:
            raise SequenceGap(sender, seq, last + 1)
        changed = _merge(conn, table, where) if table.num_rows else 0
        conn.execute(
            exchange_inbox.update()
            .where(exchange_inbox.c.sender == sender)
            .values(
                last_seq=seq,
                rows=exchange_inbox.c.rows + table.num_rows,
                applied_at=dt.datetime.now(dt.UTC),
            )
        )
    log.info(
        "applied package %s: %d versions, %d licenses new or newer",
        where,
        table.num_rows,
        changed,
    )
    return AppliedPackage(
        sender, seq, duplicate=False, rows=table.num_rows, licenses_changed=changed
    )


def _merge(conn: Connection, table: pa.Table, where: str) -> int:
    """Stage the package in temporary tables and merge it into the store; licenses changed."""
    insert = upsert_insert(conn.dialect.name)
    latest = _license_columns(_latest(table), where)
    versions = _stage("govx_stage_versions", license_versions, _VERSION_NAMES)
    stage = _stage("govx_stage_licenses", licenses, _LICENSE_NAMES)
    try:
        versions.create(conn)
        columns = {name: table.column(name).to_pylist() for name in _VERSION_NAMES}
        columns["content"] = [JSONText(text) for text in columns["content"]]
        bulk_insert(conn, versions, columns)
        _refuse_other_content(conn, versions, where)
        stage.create(conn)
        bulk_insert(conn, stage, latest)
        statement = insert(licenses).from_select(
            list(_LICENSE_NAMES), select(*(stage.c[name] for name in _LICENSE_NAMES)).where(true())
        )
        excluded = statement.excluded
        changed = conn.execute(
            statement.on_conflict_do_update(
                index_elements=[licenses.c.license_base],
                set_={
                    name: excluded[name]
                    for name in _LICENSE_NAMES
                    if name not in ("license_base", "created_at")
                },
                where=licenses.c.version < excluded.version,
            )
        ).rowcount
        conn.execute(
            insert(license_versions)
            .from_select(
                list(_VERSION_NAMES),
                select(*(versions.c[name] for name in _VERSION_NAMES)).where(true()),
            )
            .on_conflict_do_nothing()
        )
        _merge_signatures(conn, table)
    finally:
        for staged in ("govx_stage_licenses", "govx_stage_versions"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staged}")
    return max(changed, 0)


def _refuse_other_content(conn: Connection, staged: Table, where: str) -> None:
    """A version this store already has must be the very same: a license identifier is issued
    once, by one node. Otherwise :class:`ConflictError` (the whole package is refused)."""
    clash = conn.execute(
        select(license_versions.c.license_id)
        .join(
            staged,
            (staged.c.license_base == license_versions.c.license_base)
            & (staged.c.version == license_versions.c.version),
        )
        .where(staged.c.content_hash != license_versions.c.content_hash)
        .limit(1)
    ).scalar()
    if clash is not None:
        raise ConflictError(
            f"package {where}: license {clash} differs from the one here (the same identifier "
            "was issued twice, by two nodes)"
        )


def _merge_signatures(conn: Connection, table: pa.Table) -> None:
    """Add the signed batches and inclusion proofs of the package's signed versions."""
    signed = table.filter(pc.is_valid(table.column("batch_id")))
    if not signed.num_rows:
        return
    insert = upsert_insert(conn.dialect.name)
    batches = (
        signed.select(["batch_id", *_BATCH_COLUMNS, "signed_at"])
        .group_by(["batch_id", *_BATCH_COLUMNS, "signed_at"])
        .aggregate([])
    )
    rows = batches.to_pylist()
    conn.execute(insert(signature_batches).on_conflict_do_nothing(), rows)
    proofs = {
        "license_base": signed.column("license_base").to_pylist(),
        "version": signed.column("version").to_pylist(),
        "batch_id": signed.column("batch_id").to_pylist(),
        "leaf_index": signed.column("leaf_index").to_pylist(),
        "proof": [JSONText(text) for text in signed.column("proof").to_pylist()],
    }
    stage = _stage("govx_stage_proofs", license_proofs, tuple(proofs))
    stage.create(conn)
    try:
        bulk_insert(conn, stage, proofs)
        conn.execute(
            insert(license_proofs)
            .from_select(list(proofs), select(*(stage.c[name] for name in proofs)).where(true()))
            .on_conflict_do_nothing()
        )
    finally:
        conn.exec_driver_sql("DROP TABLE IF EXISTS govx_stage_proofs")
