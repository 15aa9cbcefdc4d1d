"""The API's hot path to the database: a holder's licenses and the audit group commit, on asyncio.

The intake lookup is the one route that must be fast (``bench/lookup.py``): every request reads a
holder's licenses and appends one audit entry that must be durable before the answer goes out.
Through the synchronous store each of those is a hop to a worker thread and back, and with two
cores the hops, not the database, set the pace. :func:`open_hot_path` gives the API both
operations as coroutines:

- on PostgreSQL, through an asyncpg connection pool on the event loop: the lookups of
  concurrent requests are read by one ``holder_id = ANY(...)`` statement (the store's columns
  and order, :func:`license_store.store.select_licenses_by_holder`, compiled once for asyncpg),
  and their audit entries are appended by one statement of an asyncio task
  (:class:`PgAuditWriter`) that takes the same head-row lock as
  :meth:`license_store.audit.AuditLog.append`, so it chains with every other writer;
- on SQLite (the embedded default), by the synchronous store in threads: the lookups of
  concurrent requests read together too (:meth:`LicenseStore.licenses_for_holders`), the audit
  by :class:`license_store.audit.AuditWriter`'s group commit.

Either way a response is sent only after its audit entry is committed; a failed commit fails
every request of its batch (the API answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import String, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url

from license_store.audit import HEAD_ID, AuditEntry, AuditLog, AuditWriter, hash_parts
from license_store.database import driver_message, dump_json
from license_store.errors import LicenseStoreError, StoreUnavailable
from license_store.models import audit_head, audit_log, licenses
from license_store.records import License
from license_store.store import LicenseStore, licenses_by_holder, select_licenses_by_holder

__all__ = ["AuditSink", "HolderReader", "HotPath", "PgAuditWriter", "open_hot_path"]

log = logging.getLogger("govexchange.api")

POOL_SIZE_ENV = "GOVX_API_POOL_SIZE"
DEFAULT_POOL_SIZE = 8


class HolderReader(Protocol):
    """Reads a holder's current licenses (see :meth:`LicenseStore.licenses_for_holder`)."""

    async def licenses_for_holder(self, holder_id: str) -> list[License]: ...


class AuditSink(Protocol):
    """Appends audit entries; returns once they are durable."""

    async def append(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]: ...


@dataclass
class HotPath:
    """The lookup and the audit append the API awaits, and how to close them."""

    reader: HolderReader
    audit: AuditSink
    kind: str  # "asyncpg" or "threads", for the startup log line
    _close: Callable[[], Any] = field(repr=False, default=lambda: None)

    async def close(self) -> None:
        """Commit what is queued and release the connections."""
        closing = self._close()
        if asyncio.iscoroutine(closing):
            await closing


# -- threads: the synchronous store (SQLite, or no running event loop at startup) -------------


class _ThreadedAudit:
    def __init__(self, writer: AuditWriter) -> None:
        self._writer = writer

    async def append(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
        return await asyncio.wrap_future(self._writer.submit(entries))


class _ThreadedReader:
    def __init__(self, store: LicenseStore) -> None:
        self._store = store

    async def licenses_for_holder(self, holder_id: str) -> list[License]:
        return await run_in_threadpool(self._store.licenses_for_holder, holder_id)


def threaded_hot_path(store: LicenseStore, writer: AuditWriter, *, batched: bool) -> HotPath:
    """The hot path through the synchronous store, reads and audit group commit in threads.

    ``batched`` reads the lookups of concurrent requests together (:class:`_BatchedReader`, its
    tasks on the running event loop: only for an app whose lifespan runs, on the loop that
    serves all its requests); otherwise each lookup is a read of its own.
    """
    if not batched:
        return HotPath(_ThreadedReader(store), _ThreadedAudit(writer), "threads", writer.close)

    async def fetch(holders: list[str]) -> dict[str, list[License]]:
        return await run_in_threadpool(store.licenses_for_holders, holders)

    reader = _BatchedReader(fetch, store.url)

    async def close() -> None:
        await reader.close()
        writer.close()

    return HotPath(reader, _ThreadedAudit(writer), "threads, batched", close)


# -- PostgreSQL through asyncpg ------------------------------------------------------------------


# The store's lookup (:func:`select_holder_licenses`) for many holders at once, as asyncpg SQL.
_HOLDERS_SQL = str(
    select_licenses_by_holder()
    .where(licenses.c.holder_id == any_(bindparam("holders", type_=ARRAY(String))))
    .compile(dialect=asyncpg_dialect.dialect())
)

# A batch in one statement that chains it too. Python writes each entry's hashed text but for its
# place in the chain (:func:`license_store.audit.hash_parts`); the statement locks the chain's
# head row, finishes each text with the previous entry's hash and its seq, hashes it (sha256, as
# :func:`license_store.audit.entry_hash` does), inserts the rows and moves the head. Run alone
# (autocommit) it is one transaction: the head row is locked only while the server runs it --
# never across a round trip to this worker, whose event loop is busy with other requests -- and
# writers in other processes (or :meth:`AuditLog.append`) simply queue on the row lock.
_ENTRY_COLUMNS = (  # from the batch, as given
    "occurred_at",
    "client_id",
    "action",
    "holder_masked",
    "holder_digest",
    "license_ids",
    "matter",
    "case_id",
    "result",
)
_APPEND_SQL = f"""
WITH RECURSIVE
head AS (SELECT seq, entry_hash FROM {audit_head.name} WHERE id = {HEAD_ID} FOR UPDATE),
batch AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::timestamptz[], {
    ", ".join(f"${n}::text[]" for n in range(4, 4 + len(_ENTRY_COLUMNS) - 1))
}
    ) WITH ORDINALITY AS b(hash_before, hash_after, {", ".join(_ENTRY_COLUMNS)}, n)
),
chain (n, seq, prev_hash, entry_hash) AS (
    SELECT 0::bigint, seq, ''::text, entry_hash::text FROM head
    UNION ALL
    SELECT b.n, c.seq + 1, c.entry_hash,
           encode(sha256(convert_to(
               b.hash_before || '"' || c.entry_hash || '"' || b.hash_after || (c.seq + 1)::text
               || '}}', 'UTF8')), 'hex')
    FROM chain c JOIN batch b ON b.n = c.n + 1
),
appended AS (
    INSERT INTO {audit_log.name} (seq, {", ".join(_ENTRY_COLUMNS)}, prev_hash, entry_hash)
    SELECT c.seq, {
    ", ".join(
        "b.license_ids::json" if name == "license_ids" else f"b.{name}" for name in _ENTRY_COLUMNS
    )
}, c.prev_hash, c.entry_hash
    FROM chain c JOIN batch b ON b.n = c.n
),
moved AS (
    UPDATE {audit_head.name} SET seq = last.seq, entry_hash = last.entry_hash
    FROM (SELECT seq, entry_hash FROM chain ORDER BY n DESC LIMIT 1) AS last
    WHERE {audit_head.name}.id = {HEAD_ID}
)
SELECT seq, prev_hash, entry_hash FROM chain WHERE n > 0 ORDER BY n
"""


def _unavailable(error: BaseException, where: str) -> StoreUnavailable:
    """The driver error as the store's error: first line masked, never the SQL parameters."""
    return StoreUnavailable(f"license store at {where} is unavailable: {driver_message(error)}")


async def _keep_session(conn: Any) -> None:
    """A connection goes back to the pool as it is: this code leaves no session state (no
    LISTEN, advisory lock, cursor or SET), so asyncpg's reset round trip is not needed."""


async def _init_connection(conn: Any) -> None:
    await conn.set_type_codec(
        "json", encoder=dump_json, decoder=json.loads, schema="pg_catalog", format="text"
    )


_Item = TypeVar("_Item")


async def _next_batch(
    queue: asyncio.Queue[_Item | None],
    limit: int,
    size: Callable[[list[_Item]], int],
    max_wait: float = 0.0,
) -> tuple[list[_Item], bool]:
    """Wait for an item of ``queue``, then take the others waiting, and what arrives within
    ``max_wait`` seconds, while the batch's ``size`` is under ``limit``. Returns the batch and
    whether ``None`` (close) was taken; the batch is empty when ``None`` came first."""
    first = await queue.get()
    if first is None:
        return [], True
    batch = [first]
    deadline = time.monotonic() + max_wait
    while size(batch) < limit:
        try:
            waiting = queue.get_nowait()
        except asyncio.QueueEmpty:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                waiting = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                break
        if waiting is None:
            return batch, True
        batch.append(waiting)
    return batch, False


def _fail(waiting: Sequence[asyncio.Future[Any]], error: BaseException, where: str) -> None:
    """Hand ``error`` (the store's error for a driver's) to every caller still waiting;
    re-raise it if it is not an ``Exception`` (cancellation, exit)."""
    failure = _unavailable(error, where) if _is_driver_error(error) else error
    for done in waiting:
        if not done.done():
            done.set_exception(failure)
    if not isinstance(error, Exception):
        raise error


Fetch = Callable[[list[str]], Awaitable[dict[str, list[License]]]]


class _BatchedReader:
    """Holders' licenses, the lookups of concurrent requests read by one statement.

    ``readers`` tasks each take every lookup waiting when they come round, ``fetch`` the
    licenses of all those holders at once (the store's columns and order) and hand each caller
    its holder's licenses. An idle reader takes a lookup at once, so a lone request waits for
    nothing; under load the lookups that arrive while statements run are read together: one
    round trip and one statement for many index probes instead of one each.
    """

    def __init__(
        self, fetch: Fetch, where: str, *, readers: int = 4, max_holders: int = 256
    ) -> None:
        self._fetch = fetch
        self._where = where
        self._max = max_holders
        self.queries = 0  # statements run, for monitoring (fewer than lookups under load)
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[list[License]]] | None] = (
            asyncio.Queue()
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name="holder-reader") for _ in range(readers)]

    async def licenses_for_holder(self, holder_id: str) -> list[License]:
        done: asyncio.Future[list[License]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((holder_id, done))
        return await done

    async def close(self) -> None:
        for _ in self._tasks:
            self._queue.put_nowait(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = await _next_batch(self._queue, self._max, len)
            if batch:
                await self._read(batch)

    async def _read(self, batch: list[tuple[str, asyncio.Future[list[License]]]]) -> None:
        try:
            found = await self._fetch(list({holder_id for holder_id, _ in batch}))
            self.queries += 1
        except BaseException as error:  # every caller of the batch must learn it failed
            _fail([done for _, done in batch], error, self._where)
            return
        for holder_id, done in batch:
            if not done.done():  # the caller may have gone
                done.set_result(list(found.get(holder_id, ())))


def _pg_fetch(pool: Any, today: Callable[[], dt.date]) -> Fetch:
    async def fetch(holders: list[str]) -> dict[str, list[License]]:
        day = today()
        async with pool.acquire() as conn:
            rows = await conn.fetch(_HOLDERS_SQL, holders)
        return licenses_by_holder(rows, day)

    return fetch


def _is_driver_error(error: BaseException) -> bool:
    """An error of asyncpg or of the connection (timeouts included), not of this code."""
    return isinstance(error, OSError) or type(error).__module__.startswith("asyncpg")


@dataclass
class _Pending:
    entries: list[AuditEntry]
    done: asyncio.Future[list[AuditEntry]]


class PgAuditWriter:
    """Group commit on asyncio: entries of concurrent requests appended in one transaction.

    The first waiting append opens a batch, with the appends that came while the previous
    batch was committing (and those arriving within ``max_wait_ms``, none by default), up to
    ``max_entries`` entries; one statement then chains, inserts and commits the batch after
    the head (:data:`_APPEND_SQL`). Only once it has committed is each caller released, or
    handed the batch's error.
    """

    def __init__(
        self, pool: Any, where: str, *, max_wait_ms: float = 0.0, max_entries: int = 500
    ) -> None:
        self._pool = pool
        self._where = where
        self.max_wait = max_wait_ms / 1000
        self.max_entries = max_entries
        self.batches = 0
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")
        self._closed = False

    async def append(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
        """Append ``entries`` with whatever else is waiting; returns them once committed."""
        if self._closed:
            raise RuntimeError("the audit writer is closed")
        pending = _Pending(list(entries), asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.done

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        await self._task

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = await _next_batch(
                self._queue,
                self.max_entries,
                lambda taken: sum(len(pending.entries) for pending in taken),
                self.max_wait,
            )
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        entries = [entry for pending in batch for entry in pending.entries]
        try:
            chained = await self._append(entries)
        except BaseException as error:  # every caller of the batch must learn it failed
            _fail([pending.done for pending in batch], error, self._where)
            return
        self.batches += 1
        start = 0
        for pending in batch:
            end = start + len(pending.entries)
            if not pending.done.done():  # the caller may have been cancelled
                pending.done.set_result(chained[start:end])
            start = end

    async def _append(self, entries: list[AuditEntry]) -> list[AuditEntry]:
        parts = [hash_parts(entry) for entry in entries]
        columns = [
            [before for before, _ in parts],
            [after for _, after in parts],
            [entry.occurred_at for entry in entries],
            [entry.client_id for entry in entries],
            [entry.action for entry in entries],
            [entry.holder_masked for entry in entries],
            [entry.holder_digest for entry in entries],
            [dump_json(list(entry.license_ids)) for entry in entries],
            [entry.matter for entry in entries],
            [entry.case_id for entry in entries],
            [entry.result for entry in entries],
        ]
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_APPEND_SQL, *columns)
        if len(rows) != len(entries):  # no head row: nothing was written
            raise LicenseStoreError(
                f"audit log at {self._where} has no head row: the chain cannot be extended "
                "(run govx audit verify)"
            )
        return [
            AuditEntry(
                entry.client_id,
                entry.action,
                entry.holder_masked,
                entry.holder_digest,
                entry.license_ids,
                entry.matter,
                entry.case_id,
                entry.result,
                entry.occurred_at,
                row["seq"],
                row["prev_hash"],
                row["entry_hash"],
            )
            for entry, row in zip(entries, rows, strict=True)
        ]


def pool_size() -> int:
    """Connections per API worker for the hot path (``GOVX_API_POOL_SIZE``, default 8)."""
    text = os.environ.get(POOL_SIZE_ENV, "").strip()
    if not text:
        return DEFAULT_POOL_SIZE
    try:
        size = int(text)
    except ValueError:
        raise LicenseStoreError(f"{POOL_SIZE_ENV} must be a whole number, got {text!r}") from None
    if not 1 <= size <= 200:
        raise LicenseStoreError(f"{POOL_SIZE_ENV} must be between 1 and 200, got {size}")
    return size


async def open_hot_path(store: LicenseStore, audit: AuditLog, url: str) -> HotPath:
    """The hot path for ``store`` (full URL ``url``): asyncpg on PostgreSQL, threads otherwise.

    Call on the event loop that will serve the requests (the app's lifespan)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return threaded_hot_path(store, AuditWriter(audit), batched=True)
    import asyncpg  # only the PostgreSQL profile needs it

    await run_in_threadpool(store.check_schema)  # fail at startup, not on the first read
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    size = pool_size()
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min(2, size), max_size=size, init=_init_connection, reset=_keep_session
        )
    except Exception as error:
        if _is_driver_error(error):
            raise _unavailable(error, store.url) from None
        raise
    writer = PgAuditWriter(pool, store.url)
    reader = _BatchedReader(_pg_fetch(pool, store.today), store.url)

    async def close() -> None:
        try:
            await reader.close()
            await writer.close()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 10)

    return HotPath(reader, writer, "asyncpg", close)
