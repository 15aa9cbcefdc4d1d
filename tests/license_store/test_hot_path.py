"""The API's hot path on PostgreSQL (:mod:`license_store.aio`): batched lookups and the asyncio
audit group commit, against a real database, beside the synchronous store and audit writer.

The lookups of concurrent requests are read together; each caller must still get exactly its own
holder's licenses, in the store's order. The asyncio writer and the synchronous one must extend
one hash chain without forking it. Failures reach every caller of a batch, without holder IDs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from license_store import LicenseStore, LicenseStoreError, StoreUnavailable
from license_store.aio import HotPath, open_hot_path
from license_store.audit import AuditLog
from license_store.database import create_store_engine

KEY = b"test-audit-key"


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[LicenseStore]:
    with LicenseStore(postgres_url) as store:
        store.upgrade()
        yield store


def _run(coroutine_factory, store: LicenseStore, url: str, audit: AuditLog):
    """Open the hot path on a fresh event loop, run ``coroutine_factory(hot)``, close it."""

    async def main():
        hot = await open_hot_path(store, audit, url)
        try:
            return hot, await coroutine_factory(hot)
        finally:
            await hot.close()

    return asyncio.run(main())


def _sql(url: str, statement: str) -> None:
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def test_batched_lookups_give_each_caller_its_holders_licenses(
    store: LicenseStore, db_url: str, make_record, samples
) -> None:
    """On both backends (PostgreSQL through asyncpg, SQLite through the store in threads)."""
    records = [make_record(n, number=f"HK{n}") for n in range(12)]
    records += [
        make_record(n, type_code=samples.marriage_type, type_name="结婚证", number=f"J{n}")
        for n in range(0, 12, 3)
    ]
    store.upsert(records)
    holders = [samples.resident_id(n) for n in range(14)]  # the last two hold nothing
    expected = {holder: store.licenses_for_holder(holder) for holder in holders}
    asked = holders * 10

    async def lookups(hot: HotPath):
        return await asyncio.gather(*(hot.reader.licenses_for_holder(h) for h in asked))

    with AuditLog(db_url, key=KEY) as audit:
        hot, answers = _run(lookups, store, db_url, audit)
    assert hot.kind == ("asyncpg" if db_url.startswith("postgresql") else "threads, batched")
    assert [answer for answer in answers] == [expected[holder] for holder in asked]
    assert sum(len(answer) for answer in expected.values()) == len(records)
    assert expected[holders[0]][0].type_code < expected[holders[0]][1].type_code  # store order
    assert expected[holders[-1]] == []
    # read together: far fewer statements than lookups
    assert 1 <= hot.reader.queries < len(asked) // 4  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_asyncio_and_thread_writers_extend_one_chain(
    pg_store: LicenseStore, postgres_url: str
) -> None:
    holder = "440604200307010016"
    with AuditLog(postgres_url, key=KEY) as audit:

        def entry(n: int, client: str):
            return audit.entry(
                client_id=client,
                action="read",
                holder_id=holder,
                license_ids=[f"L-{n}"],
                matter="TEST-ALL-001",
                case_id=f"C-{n}",
                result="ok",
            )

        def sync_appends() -> None:
            for n in range(40):
                audit.append([entry(n, "sync-writer")])

        async def appends(hot: HotPath):
            thread = threading.Thread(target=sync_appends)
            thread.start()
            chained = await asyncio.gather(
                *(hot.audit.append([entry(n, "async-writer")]) for n in range(200))
            )
            await asyncio.to_thread(thread.join)
            return chained

        hot, chained = _run(appends, pg_store, postgres_url, audit)
        result = audit.verify()
        stored = {item.seq: item for item in audit.for_holder(holder, limit=1000)}
    assert result.ok, result
    assert result.entries == 240 and result.head_seq == 240
    assert hot.audit.batches < 200  # type: ignore[attr-defined]  # grouped
    for (appended,) in chained:  # what each caller got back is what was stored
        assert stored[appended.seq] == appended
    assert sum(item.client_id == "async-writer" for item in stored.values()) == 200


@pytest.mark.postgres
def test_a_failed_batch_fails_every_caller_and_leaves_the_chain_whole(
    pg_store: LicenseStore, postgres_url: str, samples
) -> None:
    holder = samples.resident_id(3)
    with AuditLog(postgres_url, key=KEY) as audit:
        entries = [
            audit.entry(
                client_id="c",
                action="read",
                holder_id=holder,
                matter="TEST-ALL-001",
                case_id=f"C-{n}",
                result="ok",
            )
            for n in range(6)
        ]

        async def failing(hot: HotPath):
            await hot.audit.append(entries[:1])
            _sql(postgres_url, "ALTER TABLE audit_log RENAME TO audit_log_gone")
            outcomes = await asyncio.gather(
                *(hot.audit.append([item]) for item in entries[1:5]), return_exceptions=True
            )
            _sql(postgres_url, "ALTER TABLE audit_log_gone RENAME TO audit_log")
            outcomes.append(await hot.audit.append(entries[5:]))
            return outcomes

        _, outcomes = _run(failing, pg_store, postgres_url, audit)
        result = audit.verify()
    failures, last = outcomes[:4], outcomes[4]
    assert all(isinstance(failure, StoreUnavailable) for failure in failures), failures
    assert all(holder not in str(failure) for failure in failures)
    assert last[0].seq == 2  # nothing of the failed batches was written
    assert result.ok and result.entries == 2


@pytest.mark.postgres
def test_a_failed_lookup_is_store_unavailable_without_the_holder(
    pg_store: LicenseStore, postgres_url: str, samples
) -> None:
    holder = samples.resident_id(5)

    async def failing(hot: HotPath):
        _sql(postgres_url, "ALTER TABLE licenses RENAME TO licenses_gone")
        try:
            return await asyncio.gather(
                hot.reader.licenses_for_holder(holder),
                hot.reader.licenses_for_holder(samples.resident_id(6)),
                return_exceptions=True,
            )
        finally:
            _sql(postgres_url, "ALTER TABLE licenses_gone RENAME TO licenses")

    with AuditLog(postgres_url, key=KEY) as audit:
        _, outcomes = _run(failing, pg_store, postgres_url, audit)
    assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes), outcomes
    assert holder not in str(outcomes[0])
    assert "licenses" in str(outcomes[0])  # the driver's first line says what is missing


def test_sqlite_stores_use_the_threaded_path(sqlite_store: LicenseStore, sqlite_url: str) -> None:
    async def nothing(hot: HotPath):
        return await hot.reader.licenses_for_holder("440604200307010016")

    with AuditLog(sqlite_url, key=KEY) as audit:
        hot, found = _run(nothing, sqlite_store, sqlite_url, audit)
    assert hot.kind == "threads, batched"
    assert found == []


@pytest.mark.postgres
def test_an_unreachable_database_falls_back_when_the_api_starts(samples) -> None:
    """The API then serves through threads (test_license_api: 503 from an unreachable store);
    here: opening fails with the store's error, the password not in it."""
    url = "postgresql+psycopg://govx:s3cret@127.0.0.1:1/licenses?connect_timeout=1"
    with LicenseStore(url) as store, AuditLog(url, key=KEY) as audit:

        async def main() -> None:
            await open_hot_path(store, audit, url)

        with pytest.raises(StoreUnavailable) as raised:
            asyncio.run(main())
    assert "s3cret" not in str(raised.value)


@pytest.mark.postgres
def test_postgresql_hashes_what_python_hashes(pg_store: LicenseStore, postgres_url: str) -> None:
    """The asyncpg writer has PostgreSQL finish and hash each entry's text; ``verify``
    recomputes every hash in Python, so any difference (escaping, unicode) shows."""
    holder = "440604200307010016"
    with AuditLog(postgres_url, key=KEY) as audit:
        entries = [
            audit.entry(
                client_id='cli:张三 "quoted" \\ back',
                action="read",
                holder_id=holder,
                license_ids=["证照-1", 'L-"2"', "tab\there"],
                matter="新生儿入户登记-测试",
                case_id="FS-2026/000123:é",
                result="ok",
            )
        ]

        async def append(hot: HotPath):
            return await hot.audit.append(entries)

        _, chained = _run(append, pg_store, postgres_url, audit)
        result = audit.verify()
        (stored,) = audit.for_holder(holder)
    assert result.ok and result.entries == 1, result
    assert stored == chained[0]
    assert stored.client_id == 'cli:张三 "quoted" \\ back'


@pytest.mark.postgres
def test_a_missing_head_row_is_an_error_and_writes_nothing(
    pg_store: LicenseStore, postgres_url: str
) -> None:
    with AuditLog(postgres_url, key=KEY) as audit:
        entry = audit.entry(
            client_id="c",
            action="read",
            holder_id="440604200307010016",
            matter="TEST-ALL-001",
            case_id="C-1",
            result="ok",
        )
        _sql(postgres_url, "DELETE FROM audit_head")

        async def append(hot: HotPath):
            with pytest.raises(LicenseStoreError, match="no head row"):
                await hot.audit.append([entry])
            return True

        _, raised = _run(append, pg_store, postgres_url, audit)
    engine = create_store_engine(postgres_url)
    try:
        with engine.connect() as conn:
            count = conn.exec_driver_sql("SELECT count(*) FROM audit_log").scalar_one()
    finally:
        engine.dispose()
    assert raised and count == 0
