"""The audit trail: hash chain, tamper detection, concurrent appenders, group commit, holder lookup.

Every test runs on real SQLite and (``db_url``) on a fresh real PostgreSQL database; tampering is
done the way an intruder would, by SQL straight on the tables.
"""

from __future__ import annotations

import itertools
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from exchange.cli import app
from license_store import SchemaNotCurrent
from license_store.audit import (
    GENESIS_HASH,
    VERIFY_CHUNK,
    AuditEntry,
    AuditLog,
    AuditWriter,
    audit_key,
    entry_hash,
)
from license_store.database import create_store_engine

KEY = b"test-audit-key"
HOLDER = "440604200307010016"
OTHER_HOLDER = "91110000600037341L"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def log(db_url: str) -> Iterator[AuditLog]:
    """A migrated audit log on each backend."""
    with AuditLog(db_url, key=KEY) as opened:
        opened.upgrade()
        yield opened


@pytest.fixture
def raw_engine(db_url: str) -> Iterator[sa.Engine]:
    """A separate engine on the same database, as an intruder or another process would have."""
    engine = create_store_engine(db_url)
    yield engine
    engine.dispose()


def make_entry(log: AuditLog, n: int, holder: str = HOLDER, **overrides: str) -> AuditEntry:
    values = {
        "client_id": f"intake-{n % 3}",
        "action": "read",
        "matter": "household-transfer",
        "case_id": f"CASE-{n:05d}",
        "result": "ok",
    }
    values.update(overrides)
    return log.entry(holder_id=holder, license_ids=[f"LIC-{n}", f"LIC-{n}b"], **values)


def fill(log: AuditLog, count: int) -> list[AuditEntry]:
    return log.append([make_entry(log, n) for n in range(count)])


def run_sql(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def test_append_chains_batches_and_verify_passes(log: AuditLog) -> None:
    empty = log.verify()
    assert empty.ok and empty.entries == 0 and empty.head_hash == GENESIS_HASH
    first = log.append([make_entry(log, n) for n in range(3)])
    second = log.append([make_entry(log, n) for n in range(3, 5)])
    chain = first + second
    assert [entry.seq for entry in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(chain):
        assert after.prev_hash == before.entry_hash
    assert all(entry.entry_hash == entry_hash(entry) for entry in chain)
    result = log.verify()
    assert result.ok, result.problem
    assert (result.entries, result.head_seq, result.head_hash) == (5, 5, chain[-1].entry_hash)
    assert log.head() == (5, chain[-1].entry_hash)
    assert [entry.seq for entry in log.tail(2)] == [5, 4]
    stored = log.tail(5)[::-1]
    assert stored == chain  # what was hashed is exactly what reads back
    assert log.append([]) == []


TAMPERING = {
    "edit a field": (
        ["UPDATE audit_log SET result = 'denied' WHERE seq = 3"],
        "altered",
        3,
        "seq 3: entry altered",
    ),
    "edit the license ids": (
        ["UPDATE audit_log SET license_ids = '[\"LIC-9\"]' WHERE seq = 2"],
        "altered",
        2,
        "seq 2: entry altered",
    ),
    "delete a middle row": (
        ["DELETE FROM audit_log WHERE seq = 3"],
        "removed",
        3,
        "gap after seq 2",
    ),
    "delete the first row": (
        ["DELETE FROM audit_log WHERE seq = 1"],
        "removed",
        1,
        "gap after seq 0",
    ),
    "swap two rows' seq": (
        [
            "UPDATE audit_log SET seq = -1 WHERE seq = 2",
            "UPDATE audit_log SET seq = 2 WHERE seq = 4",
            "UPDATE audit_log SET seq = 4 WHERE seq = -1",
        ],
        "reordered",
        2,
        "seq 2: prev_hash does not match the hash of seq 1",
    ),
    "delete the last row": (
        ["DELETE FROM audit_log WHERE seq = 5"],
        "truncated",
        5,
        "head is seq 5, last entry is seq 4",
    ),
    "delete the head row": (
        ["DELETE FROM audit_head"],
        "head_missing",
        None,
        "head row is missing",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING), ids=list(TAMPERING))
def test_verify_detects_tampering_and_says_where(
    log: AuditLog, raw_engine: sa.Engine, case: str
) -> None:
    statements, kind, seq, message = TAMPERING[case]
    fill(log, 5)
    assert log.verify().ok
    run_sql(raw_engine, *statements)
    result = log.verify()
    assert not result.ok
    assert (result.kind, result.seq) == (kind, seq), result.problem
    assert message in (result.problem or "")


def test_verify_streams_past_many_chunks(log: AuditLog, raw_engine: sa.Engine) -> None:
    count = 2 * VERIFY_CHUNK + 500
    for start in range(0, count, 500):
        log.append([make_entry(log, n) for n in range(start, start + 500)])
    assert log.verify().entries == count
    run_sql(raw_engine, f"UPDATE audit_log SET matter = 'other' WHERE seq = {count - 7}")
    result = log.verify()
    assert (result.kind, result.seq, result.entries) == ("altered", count - 7, count - 8)


def test_an_edit_with_its_hash_recomputed_breaks_the_link_to_the_next_entry(
    log: AuditLog, raw_engine: sa.Engine
) -> None:
    chain = fill(log, 4)
    forged = AuditEntry(**{**_fields(chain[1]), "result": "denied"})
    forged_hash = entry_hash(forged)
    with raw_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit_log SET result = 'denied', entry_hash = :h WHERE seq = 2"),
            {"h": forged_hash},
        )
    result = log.verify()
    assert (result.kind, result.seq, result.entries) == ("reordered", 3, 2), result.problem


def _fields(entry: AuditEntry) -> dict[str, object]:
    return {name: getattr(entry, name) for name in AuditEntry.__slots__}


def test_rows_appended_behind_the_logs_back_are_reported(
    log: AuditLog, raw_engine: sa.Engine
) -> None:
    chain = fill(log, 2)
    extra = make_entry(log, 9).chained(3, chain[-1].entry_hash or "")
    with raw_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO audit_log (seq, occurred_at, client_id, action, holder_masked, "
                "holder_digest, license_ids, matter, case_id, result, prev_hash, entry_hash) "
                "SELECT 3, occurred_at, client_id, action, holder_masked, holder_digest, "
                "license_ids, matter, case_id, result, :prev, :hash FROM audit_log WHERE seq = 2"
            ),
            {"prev": extra.prev_hash, "hash": extra.entry_hash},
        )
    result = log.verify()
    assert (result.kind, result.seq) == ("extra", 3), result.problem


def test_concurrent_appenders_on_separate_connections_never_fork_the_chain(
    db_url: str, log: AuditLog
) -> None:
    threads, batches, per_batch = 6, 8, 3
    appended: list[list[AuditEntry]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def appender(index: int) -> None:
        try:
            with AuditLog(db_url, key=KEY) as own:  # its own engine: its own connections
                start.wait()
                for batch in range(batches):
                    entries = [
                        make_entry(own, 100 * index + 10 * batch + n) for n in range(per_batch)
                    ]
                    appended[index].extend(own.append(entries))
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=appender, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    total = threads * batches * per_batch
    seqs = sorted(entry.seq or 0 for entries in appended for entry in entries)
    assert seqs == list(range(1, total + 1))
    result = log.verify()
    assert result.ok, result.problem
    assert result.entries == total


APPENDER_SCRIPT = """
import sys
from license_store.audit import AuditLog
url, index = sys.argv[1], int(sys.argv[2])
with AuditLog(url, key=b"test-audit-key") as log:
    for n in range(10):
        log.append([log.entry(client_id=f"proc-{index}", action="read",
            holder_id="440604200307010016", license_ids=[f"L{n}"], matter="m",
            case_id=f"K{index}-{n}-{k}", result="ok") for k in range(2)])
"""


def test_concurrent_appender_processes_never_fork_the_chain(db_url: str, log: AuditLog) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER_SCRIPT, db_url, str(index)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for index in range(4)
    ]
    outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs
    result = log.verify()
    assert result.ok, result.problem
    assert result.entries == result.head_seq == 4 * 10 * 2
    clients = {entry.client_id for entry in log.tail(80)}
    assert clients == {f"proc-{index}" for index in range(4)}


def test_group_commit_writer_returns_only_after_the_commit(
    log: AuditLog, raw_engine: sa.Engine
) -> None:
    threads, writes = 10, 8
    errors: list[BaseException] = []
    seen: list[int] = []
    start = threading.Barrier(threads)

    def caller(writer: AuditWriter, index: int) -> None:
        try:
            start.wait()
            for n in range(writes):
                [entry] = writer.write([make_entry(log, 100 * index + n)])
                # right after write() returns, another connection already sees the entry
                with raw_engine.connect() as conn:
                    stored = conn.execute(
                        sa.text("SELECT entry_hash FROM audit_log WHERE seq = :s"),
                        {"s": entry.seq},
                    ).scalar_one()
                assert stored == entry.entry_hash
                seen.append(entry.seq or 0)
        except BaseException as error:
            errors.append(error)

    with AuditWriter(log, max_wait_ms=20, max_entries=64) as writer:
        workers = [threading.Thread(target=caller, args=(writer, i)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        batches = writer.batches
    assert errors == []
    assert sorted(seen) == list(range(1, threads * writes + 1))
    assert batches < threads * writes  # concurrent entries shared transactions
    assert log.verify().ok


def test_group_commit_writer_hands_every_caller_the_failure(sqlite_url: str) -> None:
    with AuditLog(sqlite_url, key=KEY) as unmigrated, AuditWriter(unmigrated) as writer:
        entry = make_entry(unmigrated, 1)
        with pytest.raises(SchemaNotCurrent, match="upgrade"):
            writer.write([entry])
    with pytest.raises(RuntimeError, match="closed"):
        writer.write([entry])


def test_close_commits_what_is_queued(log: AuditLog) -> None:
    writer = AuditWriter(log, max_wait_ms=200)
    futures = [writer.submit([make_entry(log, n)]) for n in range(5)]
    writer.close()
    assert sorted(f.result(timeout=0)[0].seq or 0 for f in futures) == [1, 2, 3, 4, 5]


def test_holder_lookup_by_id_without_the_id_in_the_table(
    db_url: str, log: AuditLog, raw_engine: sa.Engine
) -> None:
    log.append(
        [
            make_entry(log, 1),
            make_entry(log, 2, holder=OTHER_HOLDER, action="prefill"),
            make_entry(log, 3, case_id=f"ref {HOLDER}"),  # an ID typed into a free-text field
        ]
    )
    found = log.for_holder(HOLDER)
    assert [entry.seq for entry in found] == [3, 1]
    assert {entry.holder_masked for entry in found} == {"4406**********0016"}
    assert found[0].case_id == "ref 4406**********0016"
    assert [entry.action for entry in log.for_holder(OTHER_HOLDER.lower())] == ["prefill"]
    assert log.for_holder(HOLDER, limit=1)[0].seq == 3
    with AuditLog(db_url, key=b"another key") as other_key:
        assert other_key.for_holder(HOLDER) == []
    with raw_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM audit_log")).all()
    text = repr(rows)
    assert HOLDER not in text and OTHER_HOLDER not in text
    assert "4406**********0016" in text


def test_an_invalid_holder_id_is_logged_masked_within_its_column(log: AuditLog) -> None:
    typed = "4406042003070100161234567890123456789"  # a refused request is audited too
    [entry] = log.append([make_entry(log, 1, holder=typed, result="invalid")])
    assert entry.holder_masked == "4406" + "*" * 24 + "6789"
    assert log.for_holder(typed)[0].holder_masked == entry.holder_masked
    assert log.verify().ok


def test_holder_id_is_not_in_the_sqlite_files(sqlite_url: str, tmp_path: Path) -> None:
    with AuditLog(sqlite_url, key=KEY) as log:
        log.upgrade()
        log.append([make_entry(log, n) for n in range(3)])
        assert log.verify().ok
    contents = [path.read_bytes() for path in tmp_path.glob("licenses.db*")]
    assert any(b"4406**********0016" in content for content in contents)  # the rows are there
    assert not any(HOLDER.encode() in content for content in contents)


def test_audit_key_file_is_created_private_and_reused(isolated_govx_home: Path) -> None:
    key = audit_key()
    path = isolated_govx_home / "audit.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64
    assert audit_key() == key
    assert list(isolated_govx_home.glob(".audit.key.*")) == []


def test_audit_key_from_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("GOVX_AUDIT_KEY", "shared-by-every-api-host")
    assert audit_key() == b"shared-by-every-api-host"
    with AuditLog(sqlite_url) as log:
        entry = log.entry(
            client_id="c", action="read", holder_id=HOLDER, matter="m", case_id="k", result="ok"
        )
    with AuditLog(sqlite_url, key=b"shared-by-every-api-host") as same:
        assert (
            same.entry(
                client_id="c", action="read", holder_id=HOLDER, matter="m", case_id="k", result="ok"
            ).holder_digest
            == entry.holder_digest
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [("action", "delete"), ("result", "maybe"), ("client_id", ""), ("matter", "x" * 65)],
)
def test_entries_refuse_unknown_actions_and_bad_text(field: str, value: str) -> None:
    log = AuditLog("sqlite://", key=KEY)
    values = {"client_id": "c", "action": "read", "matter": "m", "case_id": "k", "result": "ok"}
    values[field] = value
    with pytest.raises(ValueError, match=field):
        log.entry(holder_id=HOLDER, **values)
    log.close()


# -- govx audit ----------------------------------------------------------------------------------

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def cli_log(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> Iterator[AuditLog]:
    monkeypatch.setenv("GOVX_LICENSE_DB_URL", sqlite_url)
    with AuditLog(sqlite_url) as opened:  # the key under $GOVX_HOME, as the CLI uses it
        opened.upgrade()
        yield opened


def govx(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_govx_audit_verify_exit_codes(cli_log: AuditLog, sqlite_url: str) -> None:
    code, output = govx("audit", "verify")
    assert (code, "audit trail intact: 0 entries") == (0, output.split(", head")[0].strip())
    chain = fill(cli_log, 3)
    code, output = govx("audit", "verify")
    assert code == 0, output
    assert f"audit trail intact: 3 entries, head {chain[-1].entry_hash}" in output
    engine = create_store_engine(sqlite_url)
    try:
        run_sql(engine, "UPDATE audit_log SET client_id = 'someone-else' WHERE seq = 2")
    finally:
        engine.dispose()
    code, output = govx("audit", "verify")
    assert code == 1
    assert "seq 2: entry altered" in output


def test_govx_audit_tail_shows_masked_holders(cli_log: AuditLog) -> None:
    code, output = govx("audit", "tail")
    assert (code, output.strip()) == (0, "no audit entries yet")
    fill(cli_log, 4)
    code, output = govx("audit", "tail", "-n", "2")
    assert code == 0, output
    assert "4406**********0016" in output and HOLDER not in output
    assert "CASE-00003" in output and "CASE-00002" in output and "CASE-00001" not in output


@pytest.mark.parametrize(
    "text",
    ["plain", 'quote " and \\ backslash', "控制\x01字符\t\n", "line\u2028separator", "émoji 🪪"],
)
def test_entry_hash_is_over_the_canonical_json_of_the_fields(text: str) -> None:
    """The hash is written out key by key for speed; it must be the canonical JSON's."""
    from license_store.records import canonical_json, hash_text

    log = AuditLog("sqlite://", key=KEY)
    entry = log.entry(
        client_id=f"cli:{text}"[:64],
        action="read",
        holder_id=HOLDER,
        license_ids=[text, "L-2"],
        matter=text,
        case_id="C-1",
        result="ok",
    ).chained(7, "ab" * 32)
    fields = {
        "seq": 7,
        "occurred_at": entry.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "client_id": entry.client_id,
        "action": "read",
        "holder_masked": entry.holder_masked,
        "holder_digest": entry.holder_digest,
        "license_ids": [text, "L-2"],
        "matter": entry.matter,  # stripped
        "case_id": "C-1",
        "result": "ok",
        "prev_hash": "ab" * 32,
    }
    assert entry_hash(entry) == entry.entry_hash == hash_text(canonical_json(fields))
