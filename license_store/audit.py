"""The tamper-evident audit trail of the license library: who read or changed whose licenses, why.

Every read and change of personal data becomes an :class:`AuditEntry` (client, action, holder
masked and as a keyed digest, license ids, matter, case id, result, time). :class:`AuditLog`
appends entries to the ``audit_log`` table of the license store's database as a hash chain: each
entry's ``entry_hash`` is SHA-256 over the canonical JSON of its fields and the previous entry's
hash, and ``seq`` counts 1, 2, 3 ... without gaps. The one-row ``audit_head`` table holds the last
``seq`` and hash; appenders lock it, so concurrent appenders never fork the chain, and
:meth:`AuditLog.verify` walks the chain and names the first altered, removed, reordered or
truncated entry.

The holder ID is never stored in clear: ``holder_digest`` is HMAC-SHA256 of the normalised ID
under a secret key (:func:`audit_key`: ``GOVX_AUDIT_KEY`` or ``$GOVX_HOME/audit.key``), so
:meth:`AuditLog.for_holder` finds a holder's entries, and ``holder_masked`` is for display.

:class:`AuditWriter` is the group commit for the API: entries from concurrent requests are
appended together in one transaction, and each caller returns only once its entry is committed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import json.encoder
import os
import queue
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row

from exchange.db import begin_write, safe_url
from exchange.standards.holder_ids import mask_id, mask_ids_in_text, normalise_id
from license_store.database import bulk_insert, create_store_engine, translate_errors
from license_store.errors import LicenseStoreError
from license_store.models import audit_head, audit_log
from license_store.records import hash_text

__all__ = [
    "ACTIONS",
    "GENESIS_HASH",
    "RESULTS",
    "AuditEntry",
    "AuditLog",
    "AuditWriter",
    "VerifyResult",
    "audit_key",
    "entry_hash",
    "key_file",
]

ACTIONS = ("read", "prefill", "verify", "change")
RESULTS = ("ok", "denied", "not_found", "invalid", "error", "forwarded")
_string = json.encoder.encode_basestring  # a str as json.dumps(ensure_ascii=False) writes it
GENESIS_HASH = "0" * 64  # the prev_hash of seq 1 (and the head of an empty chain)
HEAD_ID = 1
KEY_ENV = "GOVX_AUDIT_KEY"
KEY_FILE_NAME = "audit.key"
MAX_TEXT = 64  # client_id, matter and case_id columns
MAX_MASKED = 32  # holder_masked column
VERIFY_CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited access; ``seq``, ``prev_hash`` and ``entry_hash`` are set when appended."""

    client_id: str
    action: str
    holder_masked: str
    holder_digest: str
    license_ids: tuple[str, ...]
    matter: str
    case_id: str
    result: str
    occurred_at: dt.datetime
    seq: int | None = None
    prev_hash: str | None = None
    entry_hash: str | None = None

    def chained(self, seq: int, prev_hash: str) -> AuditEntry:
        """This entry at position ``seq`` after an entry hashed ``prev_hash``, with its hash."""
        # the constructor, not dataclasses.replace: this runs once per entry of every append
        return AuditEntry(
            self.client_id,
            self.action,
            self.holder_masked,
            self.holder_digest,
            self.license_ids,
            self.matter,
            self.case_id,
            self.result,
            self.occurred_at,
            seq,
            prev_hash,
            _hash_of(self, seq, prev_hash),
        )


def _utc(value: dt.datetime) -> dt.datetime:
    """UTC, microseconds: SQLite hands back naive datetimes, the log writes UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def entry_hash(entry: AuditEntry) -> str:
    """SHA-256 (hex) over the canonical JSON of every field of ``entry`` but its own hash."""
    if entry.seq is None or entry.prev_hash is None:
        raise ValueError("an entry is hashed once it has a seq and a prev_hash")
    return _hash_of(entry, entry.seq, entry.prev_hash)


def _hash_of(entry: AuditEntry, seq: int, prev_hash: str) -> str:
    """:func:`entry_hash` of ``entry`` placed at ``seq`` after ``prev_hash``.

    The text hashed is the canonical JSON (:func:`license_store.records.canonical_json`: keys
    sorted, compact, UTF-8) of the fields ``action``, ``case_id``, ``client_id``,
    ``holder_digest``, ``holder_masked``, ``license_ids``, ``matter``, ``occurred_at``,
    ``prev_hash``, ``result`` and ``seq``. It is written out here key by key, strings escaped as
    ``json.dumps`` escapes them, because building a dict for ``json.dumps`` to sort was the
    larger part of appending an entry (``tests/license_store/test_audit.py`` checks the two
    give the same text).
    """
    before, after = hash_parts(entry)
    return hash_text(f"{before}{_string(prev_hash)}{after}{int(seq)}}}")


def hash_parts(entry: AuditEntry) -> tuple[str, str]:
    """The text :func:`entry_hash` hashes, around the entry's place in the chain: it is
    ``before + json(prev_hash) + after + str(seq) + "}"`` (the asyncpg writer has PostgreSQL
    finish it, :mod:`license_store.aio`)."""
    occurred = _utc(entry.occurred_at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    before = "".join(
        (
            '{"action":',
            _string(entry.action),
            ',"case_id":',
            _string(entry.case_id),
            ',"client_id":',
            _string(entry.client_id),
            ',"holder_digest":',
            _string(entry.holder_digest),
            ',"holder_masked":',
            _string(entry.holder_masked),
            ',"license_ids":[',
            ",".join(map(_string, entry.license_ids)),
            '],"matter":',
            _string(entry.matter),
            ',"occurred_at":',
            _string(occurred),
            ',"prev_hash":',
        )
    )
    return before, ',"result":' + _string(entry.result) + ',"seq":'


def audit_key() -> bytes:
    """The secret key of holder digests: ``GOVX_AUDIT_KEY``, else ``$GOVX_HOME/audit.key``.

    The file is created on first use (32 random bytes, hex, mode 0600). Every process that writes
    or queries one audit log must use the same key: set ``GOVX_AUDIT_KEY`` when several hosts do.
    """
    configured = os.environ.get(KEY_ENV)
    if configured:
        return configured.encode("utf-8")
    from exchange.settings import govx_home

    return key_file(govx_home() / KEY_FILE_NAME)


def key_file(path: Path) -> bytes:
    """The secret key in ``path`` (hex), written first (atomically, 0600) if there is none yet."""
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            # fails if another process made one first: then theirs is the key
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink()
    key = path.read_text(encoding="ascii").strip()
    if not key:
        raise LicenseStoreError(f"the key file {path} is empty")
    return key.encode("ascii")


def holder_digest(key: bytes, holder_id: str) -> str:
    """HMAC-SHA256 (hex) of the normalised holder ID: looks a holder up without storing the ID."""
    return hmac.new(key, normalise_id(holder_id).encode("utf-8"), hashlib.sha256).hexdigest()


def _masked_holder(holder_id: str) -> str:
    """The holder ID masked, within its column even when the ID given was not a valid one."""
    masked = mask_id(normalise_id(holder_id))
    if len(masked) > MAX_MASKED:
        masked = masked[:4] + "*" * (MAX_MASKED - 8) + masked[-4:]
    return masked


def _field(
    name: str, value: str, allowed: Sequence[str] | None = None, *, mask: bool = True
) -> str:
    """A text field as stored: IDs in it masked (unless ``mask`` is false), within its column,
    from ``allowed`` if given."""
    text = str(value).strip()
    if mask:
        text = mask_ids_in_text(text)
    if allowed is not None and text not in allowed:
        raise ValueError(f"audit {name} must be one of {', '.join(allowed)}, got {text!r}")
    if not text or len(text) > MAX_TEXT:
        raise ValueError(f"audit {name} must have 1..{MAX_TEXT} characters, got {len(text)}")
    return text


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :meth:`AuditLog.verify` found: ``ok``, or the first problem and where it is."""

    entries: int  # entries checked (all of them when ok)
    head_seq: int
    head_hash: str
    problem: str | None = None
    kind: str | None = None  # altered, removed, reordered, truncated, extra, head_missing
    seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _entry_from_row(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        client_id=row.client_id,
        action=row.action,
        holder_masked=row.holder_masked,
        holder_digest=row.holder_digest,
        license_ids=tuple(row.license_ids),
        matter=row.matter,
        case_id=row.case_id,
        result=row.result,
        occurred_at=_utc(row.occurred_at),
        seq=row.seq,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


def _sqlite_full_sync(dbapi_connection: Any, _record: Any) -> None:
    # WAL with synchronous=NORMAL may lose the last commits on power loss; FULL does not.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


class AuditLog:
    """The audit trail in the license store's database (SQLite or PostgreSQL), reached by URL.

    ``url`` defaults to :func:`exchange.settings.license_db_url`, ``key`` to :func:`audit_key`.
    The schema comes with the license store's migrations (``LicenseStore.upgrade()``).
    """

    def __init__(self, url: str | None = None, *, key: bytes | None = None) -> None:
        if url is None:
            from exchange.settings import license_db_url

            url = license_db_url()
        self.url = safe_url(url)
        self._key = key
        with translate_errors(self.url):
            self._engine = create_store_engine(url)
        if self._engine.dialect.name == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_full_sync)

    def __repr__(self) -> str:
        return f"AuditLog({self.url!r})"

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
        """Release the connection pool."""
        self._engine.dispose()

    def upgrade(self) -> None:
        """Apply the license store's migrations (which create the audit tables) up to head."""
        from license_store import migrations

        migrations.upgrade(self._engine)

    @property
    def key(self) -> bytes:
        """The holder-digest key: the one given, else :func:`audit_key` (read on first use)."""
        if self._key is None:
            self._key = audit_key()
        return self._key

    def entry(
        self,
        *,
        client_id: str,
        action: str,
        holder_id: str,
        license_ids: Iterable[str] = (),
        matter: str,
        case_id: str,
        result: str,
        occurred_at: dt.datetime | None = None,
    ) -> AuditEntry:
        """A new entry about ``holder_id`` (stored only masked and as a digest), not yet appended.

        ``action`` is one of :data:`ACTIONS`, ``result`` one of :data:`RESULTS`; ``occurred_at``
        defaults to now (UTC). Anything shaped like an ID number in the text fields is masked.
        """
        return AuditEntry(
            client_id=_field("client_id", client_id),
            action=_field("action", action, ACTIONS),
            holder_masked=_masked_holder(holder_id),
            holder_digest=holder_digest(self.key, holder_id),
            license_ids=tuple(str(license_id) for license_id in license_ids),
            # a catalogue code (callers check it), which embeds a department's credit code
            matter=_field("matter", matter, mask=False),
            case_id=_field("case_id", case_id),
            result=_field("result", result, RESULTS),
            occurred_at=_utc(occurred_at or dt.datetime.now(dt.UTC)),
        )

    # -- writes -------------------------------------------------------------------------------

    def append(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
        """Chain ``entries`` after the head, commit them in one transaction, return them chained.

        The head row is locked for the transaction (``SELECT ... FOR UPDATE`` on PostgreSQL;
        SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so concurrent appenders queue
        and the chain never forks. Returns only after the commit: the entries are durable.
        """
        if not entries:
            return []
        with translate_errors(self.url), begin_write(self._engine) as conn:
            head_seq, head_hash = self._locked_head(conn)
            chained = chain_entries(entries, head_seq, head_hash)
            head_hash = chained[-1].entry_hash or ""
            rows = [row_of(entry) for entry in chained]
            bulk_insert(conn, audit_log, {name: [row[name] for row in rows] for name in rows[0]})
            conn.execute(
                update(audit_head)
                .where(audit_head.c.id == HEAD_ID)
                .values(seq=chained[-1].seq, entry_hash=head_hash)
            )
        return chained

    def _locked_head(self, conn: Connection) -> tuple[int, str]:
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.entry_hash)
            .where(audit_head.c.id == HEAD_ID)
            .with_for_update()
        ).one_or_none()
        if head is None:
            raise LicenseStoreError(
                f"audit log at {self.url} has no head row: the chain cannot be extended "
                "(run govx audit verify)"
            )
        return head.seq, head.entry_hash

    # -- reads --------------------------------------------------------------------------------

    def for_holder(self, holder_id: str, limit: int = 100) -> list[AuditEntry]:
        """The holder's entries, newest first (found by digest: the ID is not stored)."""
        digest = holder_digest(self.key, holder_id)
        statement = (
            select(audit_log)
            .where(audit_log.c.holder_digest == digest)
            .order_by(audit_log.c.occurred_at.desc(), audit_log.c.seq.desc())
            .limit(limit)
        )
        with translate_errors(self.url), self._engine.connect() as conn:
            return [_entry_from_row(row) for row in conn.execute(statement)]

    def tail(self, limit: int = 20) -> list[AuditEntry]:
        """The last ``limit`` entries, newest first."""
        statement = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        with translate_errors(self.url), self._engine.connect() as conn:
            return [_entry_from_row(row) for row in conn.execute(statement)]

    def head(self) -> tuple[int, str]:
        """The head row: last ``seq`` and its ``entry_hash`` (0 and the genesis hash if empty)."""
        with translate_errors(self.url), self._engine.connect() as conn:
            row = conn.execute(
                select(audit_head.c.seq, audit_head.c.entry_hash).where(audit_head.c.id == HEAD_ID)
            ).one_or_none()
        if row is None:
            raise LicenseStoreError(f"audit log at {self.url} has no head row")
        return row.seq, row.entry_hash

    # -- verification -------------------------------------------------------------------------

    def verify(self) -> VerifyResult:
        """Walk the whole chain in ``seq`` order (streaming) and report the first problem.

        Reads one snapshot (PostgreSQL: ``REPEATABLE READ``; SQLite: one read transaction), so
        concurrent appends neither disturb nor show up half-way.
        """
        with translate_errors(self.url), self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                head = conn.execute(
                    select(audit_head.c.seq, audit_head.c.entry_hash).where(
                        audit_head.c.id == HEAD_ID
                    )
                ).one_or_none()
                return _walk(self._stream(conn), head)

    @staticmethod
    def _stream(conn: Connection) -> Iterator[AuditEntry]:
        rows = conn.execution_options(yield_per=VERIFY_CHUNK).execute(
            select(audit_log).order_by(audit_log.c.seq)
        )
        for row in rows:
            yield _entry_from_row(row)


def chain_entries(entries: Sequence[AuditEntry], head_seq: int, head_hash: str) -> list[AuditEntry]:
    """``entries`` chained after the head entry ``head_seq`` (hashed ``head_hash``)."""
    chained: list[AuditEntry] = []
    for offset, entry in enumerate(entries, start=1):
        chained.append(entry.chained(head_seq + offset, head_hash))
        head_hash = chained[-1].entry_hash or ""
    return chained


def row_of(entry: AuditEntry) -> dict[str, Any]:
    """The ``audit_log`` row of a chained entry."""
    return {
        "seq": entry.seq,
        "occurred_at": entry.occurred_at,
        "client_id": entry.client_id,
        "action": entry.action,
        "holder_masked": entry.holder_masked,
        "holder_digest": entry.holder_digest,
        "license_ids": list(entry.license_ids),
        "matter": entry.matter,
        "case_id": entry.case_id,
        "result": entry.result,
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
    }


def _walk(entries: Iterable[AuditEntry], head: Row[Any] | None) -> VerifyResult:
    """Check each entry against its predecessor, then the last one against the head row."""
    if head is None:
        return VerifyResult(0, 0, "", "the head row is missing (deleted)", "head_missing")
    last_seq, last_hash = 0, GENESIS_HASH
    checked = 0

    def problem(text: str, kind: str, seq: int) -> VerifyResult:
        return VerifyResult(checked, head.seq, head.entry_hash, text, kind, seq)

    for entry in entries:
        seq = entry.seq or 0
        if last_seq >= head.seq:
            return problem(
                f"seq {seq}: entry beyond the head (seq {head.seq}): appended outside the log",
                "extra",
                seq,
            )
        if seq != last_seq + 1:
            return problem(
                f"seq {last_seq + 1}: entry removed (gap after seq {last_seq}, next is seq {seq})",
                "removed",
                last_seq + 1,
            )
        if entry.prev_hash != last_hash:
            return problem(
                f"seq {seq}: prev_hash does not match the hash of seq {last_seq} "
                "(entries reordered, replaced or inserted)",
                "reordered",
                seq,
            )
        if entry_hash(entry) != entry.entry_hash:
            return problem(
                f"seq {seq}: entry altered (hash mismatch: its fields do not hash to its "
                "entry_hash)",
                "altered",
                seq,
            )
        last_seq, last_hash = seq, entry.entry_hash
        checked += 1
    if (last_seq, last_hash) != (head.seq, head.entry_hash):
        if last_seq < head.seq:
            text = (
                f"seq {last_seq + 1}: entries removed at the end (head is seq {head.seq}, "
                f"last entry is seq {last_seq})"
            )
        else:
            text = f"seq {head.seq}: the head row's hash does not match the last entry's"
        return problem(text, "truncated", last_seq + 1 if last_seq < head.seq else head.seq)
    return VerifyResult(checked, head.seq, head.entry_hash)


@dataclass(eq=False)
class _Request:
    entries: list[AuditEntry]
    done: Future[list[AuditEntry]] = field(default_factory=Future)


class AuditWriter:
    """Group commit: entries from concurrent callers appended together, each caller waiting for it.

    A background thread takes the first waiting request, gathers more for up to ``max_wait_ms``
    or until ``max_entries`` entries, appends them in one transaction and then releases every
    caller of the batch (or hands each the batch's error). So many concurrent reads cost one
    commit, and still no caller returns before its entry is durable. Use as a context manager
    or call :meth:`close`; asyncio callers await ``asyncio.wrap_future(writer.submit(...))``.
    """

    def __init__(self, log: AuditLog, *, max_wait_ms: float = 5.0, max_entries: int = 500) -> None:
        if max_wait_ms < 0 or max_entries < 1:
            raise ValueError("max_wait_ms must be >= 0 and max_entries >= 1")
        self.log = log
        self.max_wait = max_wait_ms / 1000
        self.max_entries = max_entries
        self.batches = 0  # transactions committed, for monitoring
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def submit(self, entries: Sequence[AuditEntry]) -> Future[list[AuditEntry]]:
        """Queue ``entries``; the future resolves to them chained once they are committed."""
        request = _Request(list(entries))
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            self._queue.put(request)
        return request.done

    def write(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
        """Append ``entries`` with whatever else is queued; returns once they are committed."""
        return self.submit(entries).result()

    def close(self) -> None:
        """Commit what is queued, then stop the background thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            count = len(first.entries)
            deadline = time.monotonic() + self.max_wait
            while count < self.max_entries:
                try:
                    request = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if request is None:
                    stopping = True
                    break
                batch.append(request)
                count += len(request.entries)
            self._commit(batch)

    def _commit(self, batch: list[_Request]) -> None:
        try:
            chained = self.log.append([entry for request in batch for entry in request.entries])
        except BaseException as error:  # every caller of the batch must learn it failed
            for request in batch:
                request.done.set_exception(error)
            return
        self.batches += 1
        start = 0
        for request in batch:
            end = start + len(request.entries)
            request.done.set_result(chained[start:end])
            start = end
