"""The ``rest`` connector against the department REST simulator, over real HTTP on loopback.

No part of ``requests`` is mocked: faults come from the simulator
(:mod:`exchange.demo.rest_simulator`). The connector's ``sleep`` and ``rng`` are injected so that
backoff is asserted on the delays it asks for, not on wall time; only the timeout and rate-limit
tests wait (a fraction of a second).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from connectors.base import Extraction, ExtractRequest
from connectors.errors import (
    ConnectorOptionError,
    SourceAuthError,
    SourceConfigError,
    SourceDataError,
    SourceQueryError,
    SourceSchemaError,
    SourceUnavailable,
    TerminalError,
    TransientError,
)
from connectors.registry import connector_class
from connectors.rest import RestConnector, RestExtraction, backoff_delay, retry_after_seconds
from exchange.demo.rest_simulator import (
    DEFAULT_PATH,
    Simulator,
    demo_birth_records,
    start_simulator,
)

SOURCE_ID = "chancheng_birth_certificates_api"
T0 = dt.datetime(2024, 3, 1, 8, 0, 0)
NAMES = ["张三", "李四", "王小明", "赵敏", "欧阳娜娜", "司马光", "陈奕迅"]
N = 23
DECLARED = {
    "id": "int64",
    "weight_kg": "float64",
    "alive": "bool",
    "birth_date": "date",
    "updated_at": "timestamp",
}
PAGINATIONS: dict[str, dict[str, Any]] = {
    "page": {"pagination": {"type": "page", "page_size": 5}},
    "offset": {"pagination": {"type": "offset", "limit": 5}},
    "cursor": {
        "pagination": {"type": "cursor", "next_cursor_path": "meta.next_cursor"},
        "params": {"limit": 5},
    },
    "link": {"pagination": {"type": "link"}, "params": {"limit": 5}},
    "none": {},
}


def record(i: int, **changes: Any) -> dict[str, Any]:
    row = {
        "id": i,
        "name": NAMES[i % len(NAMES)],
        "weight_kg": 2.5 + i / 10,
        "alive": i % 5 != 0,
        "birth_date": f"2024-02-{1 + i % 28:02d}",
        "updated_at": (T0 + dt.timedelta(minutes=i)).isoformat(),
        "apgar": i % 10,  # not declared: an int that becomes text
        "tags": {"ward": "产科", "beds": [i, i + 1]},  # nested: JSON text
        "father_name": None if i % 4 == 0 else "某某",
    }
    row.update(changes)
    return row


RECORDS = [record(i) for i in range(1, N + 1)]


class Sleeps(list[float]):
    """A ``sleep`` that records what it was asked to wait and returns at once."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with start_simulator(RECORDS) as simulator:
        yield simulator


def request(
    url: str,
    since: Any = None,
    *,
    cursor: str | None = "updated_at",
    primary_key: tuple[str, ...] = ("id",),
    **options: Any,
) -> ExtractRequest:
    options = {"path": DEFAULT_PATH, "records_path": "data.items", **options}
    return ExtractRequest(
        source_id=SOURCE_ID,
        options=options,
        url=url,
        primary_key=primary_key,
        cursor_column=cursor,
        since=since,
    )


def extract(
    url: str,
    since: Any = None,
    *,
    sleep: Sleeps | None = None,
    **options: Any,
) -> tuple[RestExtraction, list[pa.RecordBatch]]:
    connector = RestConnector(
        request(url, since, **options), sleep=Sleeps() if sleep is None else sleep, rng=lambda: 1.0
    )
    extraction = connector.extract()
    assert isinstance(extraction, Extraction)
    return extraction, list(extraction)


def ids(batches: list[pa.RecordBatch]) -> list[int]:
    return [int(i) for batch in batches for i in batch.column("id").to_pylist()]


# ------------------------------------------------------------------------------------------------
# Reading


def test_rest_is_a_registered_kind() -> None:
    assert connector_class("rest") is RestConnector
    assert RestConnector.kind == "rest"


@pytest.mark.parametrize("kind", list(PAGINATIONS))
def test_every_pagination_returns_exactly_the_records(sim: Simulator, kind: str) -> None:
    extraction, batches = extract(sim.url, schema=DECLARED, batch_size=10, **PAGINATIONS[kind])

    assert [b.num_rows for b in batches] == [10, 10, 3]
    assert ids(batches) == list(range(1, N + 1))
    assert extraction.rows_read == N
    assert all(batch.schema == extraction.schema for batch in batches)
    schema = extraction.schema
    assert schema.names[:5] == ["id", "name", "weight_kg", "alive", "birth_date"]
    assert schema.field("id").type == pa.int64()
    assert schema.field("weight_kg").type == pa.float64()
    assert schema.field("alive").type == pa.bool_()
    assert schema.field("birth_date").type == pa.date32()
    assert schema.field("updated_at").type == pa.timestamp("us")
    for undeclared in ("name", "apgar", "tags", "father_name"):
        assert schema.field(undeclared).type == pa.string()

    table = pa.Table.from_batches(batches).to_pylist()
    assert table[1] == {
        "id": 2,
        "name": "王小明",
        "weight_kg": 2.7,
        "alive": True,
        "birth_date": dt.date(2024, 2, 3),
        "updated_at": T0 + dt.timedelta(minutes=2),
        "apgar": "2",
        "tags": '{"ward":"产科","beds":[2,3]}',
        "father_name": "某某",
    }
    assert table[3]["father_name"] is None
    assert table[4]["alive"] is False
    assert extraction.cursor_after == RECORDS[-1]["updated_at"]
    # offset ends on an empty page, page then re-reads the page before it once (the server may
    # have grown its pages), cursor and link end when there is no next one
    pages = {"page": 7, "offset": 6, "cursor": 5, "link": 5, "none": 1}[kind]
    assert len(sim.data_requests) == pages


def test_the_demo_birth_certificates_are_served() -> None:
    records = demo_birth_records(persons=300)
    with start_simulator(records) as simulator:
        extraction, batches = extract(
            simulator.url,
            cursor=None,
            primary_key=("record_id",),
            pagination={"type": "page", "page_size": 4},
            schema={"record_id": "int64", "birth_date": "date"},
        )
    table = pa.Table.from_batches(batches)
    assert table.num_rows == len(records) > 4
    assert table.column("record_id").to_pylist() == [r["record_id"] for r in records]
    assert table.column("baby_name").to_pylist() == [r["baby_name"] for r in records]
    assert extraction.schema.field("birth_date").type == pa.date32()


def test_incremental_reads_only_newer_records(sim: Simulator) -> None:
    options = {"incremental": {"param": "updated_since"}, **PAGINATIONS["offset"]}
    full, batches = extract(sim.url, **options)
    assert ids(batches) == list(range(1, N + 1))
    assert "updated_since" not in sim.data_requests[0].params  # a full refresh sends no watermark
    since = json.loads(json.dumps(full.cursor_after))
    assert since == (T0 + dt.timedelta(minutes=N)).isoformat()

    sim.set_records(
        [*RECORDS[:10], *(record(i, updated_at="2024-03-02T09:00:00") for i in (11, 12))]
    )
    sim.set_records(
        [
            *RECORDS[:-2],
            record(N - 1, name="改名", updated_at="2024-03-02T09:00:00"),
            record(N, updated_at="2024-03-02T09:30:00+08:00"),  # 01:30 UTC: older than 09:00
            record(N + 1, updated_at="2024-03-02T10:00:00Z"),
        ]
    )
    before = len(sim.data_requests)
    second, batches = extract(sim.url, since, **options)
    assert ids(batches) == [N - 1, N, N + 1]
    assert all(r.params["updated_since"] == since for r in sim.data_requests[before:])
    # compared as instants, not as text ("...T09:30:00+08:00" sorts after "...T10:00:00Z")
    assert second.cursor_after == "2024-03-02T10:00:00Z"
    assert second.schema.names == full.schema.names

    third, batches = extract(sim.url, second.cursor_after, **options)
    assert ids(batches) == [N + 1]  # the record at the watermark is read again
    assert third.cursor_after == second.cursor_after


def test_an_empty_source_has_a_schema_and_keeps_the_cursor() -> None:
    with start_simulator([]) as simulator:
        extraction, batches = extract(
            simulator.url, "2024-03-01T00:00:00", schema={"weight_kg": "float64"}
        )
    assert batches == []
    assert extraction.rows_read == 0
    assert extraction.schema == pa.schema(
        [("weight_kg", pa.float64()), ("id", pa.string()), ("updated_at", pa.string())]
    )
    assert extraction.cursor_after == "2024-03-01T00:00:00"


def test_repeated_records_are_dropped_and_the_last_version_wins() -> None:
    served = [record(1), record(2), record(1), record(3), record(2, name="新名字"), record(4)]
    with start_simulator(served) as simulator:
        extraction, batches = extract(simulator.url, **PAGINATIONS["offset"], batch_size=3)
        table = pa.Table.from_batches(batches).to_pylist()
    assert [row["id"] for row in table] == ["1", "3", "2", "4"]  # undeclared: text
    assert table[2]["name"] == "新名字"
    assert extraction.duplicates_dropped == 1
    assert extraction.rows_read == 4


def test_a_field_that_appears_late_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = [*RECORDS[:5], record(6, surprise="x"), *RECORDS[6:]]
    with start_simulator(served) as simulator, caplog.at_level(logging.WARNING):
        extraction, batches = extract(simulator.url, **PAGINATIONS["page"])
    assert "surprise" not in extraction.schema.names
    assert ids(batches) == list(range(1, N + 1))
    assert "'surprise' first appears on page 2" in caplog.text


# ------------------------------------------------------------------------------------------------
# Retries


def test_429_and_5xx_are_retried_honouring_retry_after(sim: Simulator) -> None:
    sim.set_faults(rate_limited=2, retry_after="3", server_errors=2, server_error_status=500)
    sleeps = Sleeps()
    _, batches = extract(sim.url, sleep=sleeps, **PAGINATIONS["page"])
    assert ids(batches) == list(range(1, N + 1))
    # Retry-After as asked, then full-jitter backoff for attempts 3 and 4 (rng = 1.0: the top
    # of each range, 0.5 * 2**(attempt - 1))
    assert sleeps == [3.0, 3.0, 2.0, 4.0]
    assert [r.status for r in sim.data_requests[:5]] == [429, 429, 500, 500, 200]


def test_retry_after_as_an_http_date_and_the_backoff_cap() -> None:
    now = dt.datetime(2024, 3, 1, 8, 0, 0, tzinfo=dt.UTC)
    later = email.utils.format_datetime(now + dt.timedelta(seconds=7), usegmt=True)
    assert retry_after_seconds(later, now=now) == 7.0
    assert retry_after_seconds("12", now=now) == 12.0
    assert retry_after_seconds("soon", now=now) is None
    assert [backoff_delay(n, 0.5, 30, lambda: 1.0) for n in (1, 2, 3, 8)] == [0.5, 1.0, 2.0, 30]
    assert backoff_delay(3, 0.5, 30, lambda: 0.25) == 0.5


def test_a_retry_after_beyond_the_limit_gives_up_at_once(sim: Simulator) -> None:
    sim.set_faults(rate_limited=1, retry_after="600")
    sleeps = Sleeps()
    with pytest.raises(SourceUnavailable, match="retry after 600 s"):
        extract(sim.url, sleep=sleeps)
    assert sleeps == []


def test_retries_exhausted_is_transient_and_hides_the_password(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim.auth, sim.username, sim.password = "basic", "dept", "p@ss-w0rd"
    sim.set_faults(server_errors=10)
    url = sim.connection_url("dept", "p@ss-w0rd")
    sleeps = Sleeps()
    with pytest.raises(SourceUnavailable) as caught:
        extract(url, sleep=sleeps, max_retries=2, **PAGINATIONS["page"])
    error = caught.value
    assert isinstance(error, TransientError)
    assert not isinstance(error, TerminalError)
    message = str(error)
    assert SOURCE_ID in message
    assert DEFAULT_PATH in message
    assert "HTTP 503 after 3 attempts" in message
    assert "page 1" in message
    assert "p@ss-w0rd" not in message and "p%40ss-w0rd" not in message
    assert len(sleeps) == 2
    assert "retry 2 of 2" in caplog.text
    assert "p@ss-w0rd" not in caplog.text and "p%40ss-w0rd" not in caplog.text


def test_a_refused_connection_is_transient(sim: Simulator) -> None:
    url = sim.url
    sim.stop()
    with pytest.raises(SourceUnavailable, match=r"connection error \(ConnectionRefusedError\)"):
        extract(url, max_retries=1)


def test_a_timeout_and_a_connection_reset_are_retried(sim: Simulator) -> None:
    sim.set_faults(slow=1, slow_seconds=1.0, resets=1)
    sleeps = Sleeps()
    _, batches = extract(sim.url, sleep=sleeps, timeout={"connect": 2, "read": 0.2})
    assert ids(batches) == list(range(1, N + 1))
    assert len(sleeps) == 2
    reset, slow, answered = sim.data_requests
    assert reset.status is None and answered.status == 200
    assert answered.at - slow.at < 1.0  # the client gave up on the slow answer


# ------------------------------------------------------------------------------------------------
# Bad answers


def test_truncated_json_is_a_terminal_data_error_naming_the_page(sim: Simulator) -> None:
    sim.set_faults(truncate_page=3)
    with pytest.raises(SourceDataError) as caught:
        extract(sim.url, **PAGINATIONS["page"])
    message = str(caught.value)
    assert isinstance(caught.value, TerminalError)
    assert "(page 3)" in message
    assert "not valid JSON" in message and "at byte" in message and "truncated" in message
    assert not any(name in message for name in NAMES)  # no record values


@pytest.mark.parametrize("kind", ["page", "offset", "cursor", "link"])
@pytest.mark.parametrize("new_size", [3, 12])
def test_a_page_size_change_loses_and_duplicates_nothing(
    sim: Simulator, kind: str, new_size: int
) -> None:
    sim.set_faults(page_size_change=(2, new_size))
    extraction, batches = extract(sim.url, batch_size=4, **PAGINATIONS[kind])
    assert sorted(ids(batches)) == list(range(1, N + 1))  # the order may change, nothing else
    assert extraction.rows_read == N


def test_a_wrong_path_is_a_schema_error(sim: Simulator) -> None:
    with pytest.raises(SourceSchemaError, match=r"/api/v1/births .*HTTP 404"):
        extract(sim.url, path="/api/v1/births")


def test_a_missing_records_path_is_a_data_error(sim: Simulator) -> None:
    with pytest.raises(SourceDataError, match=r"no 'data.records' \(missing at 'records'"):
        extract(sim.url, records_path="data.records")
    with pytest.raises(SourceDataError, match=r"'data' is an object, not a list"):
        extract(sim.url, records_path="data")


def test_a_value_that_does_not_fit_its_declared_type(sim: Simulator) -> None:
    sim.set_records([*RECORDS[:7], record(8, weight_kg="heavy"), *RECORDS[8:]])
    with pytest.raises(SourceDataError) as caught:
        extract(sim.url, schema=DECLARED, **PAGINATIONS["page"])
    assert "page 2: field 'weight_kg' holds a string that is not a valid float64" in str(
        caught.value
    )
    assert "heavy" not in str(caught.value)


def test_a_rejected_request_is_a_query_error(sim: Simulator) -> None:
    with pytest.raises(SourceQueryError, match="HTTP 400: updated_since is not an ISO-8601"):
        extract(sim.url, "yesterday", incremental={"param": "updated_since"})


# ------------------------------------------------------------------------------------------------
# Authentication


def test_basic_auth() -> None:
    with start_simulator(RECORDS, auth="basic", username="dept", password="pw:1@x") as simulator:
        _, batches = extract(simulator.connection_url("dept", "pw:1@x"))
        assert ids(batches) == list(range(1, N + 1))
        with pytest.raises(SourceAuthError) as caught:
            extract(simulator.connection_url("dept", "wrong-pw"))
    assert "HTTP 401" in str(caught.value)
    assert "wrong-pw" not in str(caught.value)


def test_api_key_auth_from_the_url_or_the_option() -> None:
    with start_simulator(RECORDS, auth="api_key", api_key_header="X-Dept-Key") as simulator:
        url = simulator.connection_url(password=simulator.api_key, auth="api_key")
        _, batches = extract(url.replace("auth=api_key", "auth=api_key&header=X-Dept-Key"))
        assert ids(batches) == list(range(1, N + 1))
        _, batches = extract(url, auth={"type": "api_key", "header": "X-Dept-Key"})
        assert ids(batches) == list(range(1, N + 1))
        assert simulator.data_requests[-1].headers["X-Dept-Key"] == simulator.api_key
        with pytest.raises(SourceAuthError):
            extract(url)  # the default header, X-API-Key, is not the one this API reads


def test_oauth2_token_is_fetched_once_and_refreshed_on_401() -> None:
    with start_simulator(RECORDS, auth="oauth2") as simulator:
        url = simulator.connection_url(
            simulator.client_id, simulator.client_secret, auth="oauth2", token_path="/oauth/token"
        )
        _, batches = extract(url, **PAGINATIONS["page"])
        assert ids(batches) == list(range(1, N + 1))
        assert simulator.tokens_issued == 1  # six pages, one token

        before = len(simulator.data_requests)
        connector = RestConnector(request(url, batch_size=5, **PAGINATIONS["page"]))
        extraction = connector.extract()
        pages = iter(extraction)
        first = next(pages)
        simulator.revoke_tokens()  # the token dies mid-run: 401, a new token, the same page
        rest = list(pages)
        assert ids([first, *rest]) == list(range(1, N + 1))
        assert simulator.tokens_issued == 3
        statuses = [r.status for r in simulator.data_requests[before:]]
        assert statuses[:3] == [200, 401, 200]
        assert statuses.count(401) == 1

        simulator.set_faults(unauthorized=2)  # still refused with a fresh token
        with pytest.raises(SourceAuthError, match="HTTP 401"):
            extract(url)


def test_oauth2_token_is_renewed_when_it_expires() -> None:
    now = [0.0]
    with start_simulator(RECORDS, auth="oauth2", token_ttl=60) as simulator:
        url = simulator.connection_url(simulator.client_id, simulator.client_secret, auth="oauth2")
        connector = RestConnector(
            request(url, batch_size=5, **PAGINATIONS["page"]), clock=lambda: now[0]
        )
        pages = iter(connector.extract())
        first = next(pages)
        now[0] += 55  # within the last 10% of its life: renewed before the server refuses it
        rest = list(pages)
        assert ids([first, *rest]) == list(range(1, N + 1))
        assert simulator.tokens_issued == 2
        assert 401 not in [r.status for r in simulator.data_requests]


def test_oauth2_bad_secret_is_an_auth_error_without_the_secret() -> None:
    with start_simulator(RECORDS, auth="oauth2") as simulator:
        url = simulator.connection_url(simulator.client_id, "not-the-secret", auth="oauth2")
        with pytest.raises(SourceAuthError) as caught:
            extract(url)
    message = str(caught.value)
    assert "token endpoint refused the client credentials (HTTP 401: invalid_client)" in message
    assert "not-the-secret" not in message


# ------------------------------------------------------------------------------------------------
# Rate limit and configuration


def test_the_rate_limit_is_respected(sim: Simulator) -> None:
    rate = 10.0
    connector = RestConnector(
        request(sim.url, rate_limit=rate, **PAGINATIONS["page"]), rng=lambda: 1.0
    )
    assert ids(list(connector.extract())) == list(range(1, N + 1))
    arrivals = [r.at for r in sim.data_requests]
    assert len(arrivals) == 7
    # a token bucket of one: any k + 1 consecutive requests span at least (k - 1) / rate
    # seconds, however late one of them reached the server (a little scheduling jitter allowed)
    for i, j in itertools.combinations(range(len(arrivals)), 2):
        assert arrivals[j] - arrivals[i] >= (j - i - 1) / rate - 0.01, (i, j)
    assert arrivals[-1] - arrivals[0] >= 5 / rate


def test_the_rate_limiter_spaces_requests_on_its_clock(sim: Simulator) -> None:
    now = [100.0]
    sleeps = Sleeps()

    def sleep(seconds: float) -> None:
        sleeps(seconds)
        now[0] += seconds

    # the limiter is shared by the runs of a source: a source of its own for this fake clock
    own = dataclasses.replace(
        request(sim.url, rate_limit=4, **PAGINATIONS["page"]), source_id="fake_clock_source"
    )
    connector = RestConnector(own, sleep=sleep, clock=lambda: now[0])
    assert ids(list(connector.extract())) == list(range(1, N + 1))
    assert sleeps == [0.25] * 6  # seven requests, at most four a second


@pytest.mark.parametrize(
    ("options", "option", "reason"),
    [
        ({"pagniation": {"type": "page"}}, "pagniation", "unknown option"),
        ({"pagination": {"type": "page", "page_sise": 5}}, "pagination.page_sise", "page_size"),
        ({"pagination": {"type": "pages"}}, "pagination", "does not match"),
        ({"pagination": {"type": "offset", "limit": 0}}, "pagination.limit", "greater"),
        ({"auth": {"type": "api_key", "heder": "X"}}, "auth.heder", "header"),
        ({"timeout": {"conect": 1}}, "timeout.conect", "connect, read"),
        ({"schema": {"id": "integer"}}, "schema.id", "int64"),
        ({"max_retries": "many"}, "max_retries", "integer"),
    ],
)
def test_option_mistakes_are_option_errors(
    options: dict[str, Any], option: str, reason: str
) -> None:
    with pytest.raises(ConnectorOptionError) as caught:
        RestConnector(request("http://127.0.0.1:9", **options))
    assert caught.value.option == option
    assert reason in str(caught.value)


def test_incremental_needs_a_field() -> None:
    with pytest.raises(ConnectorOptionError, match=r"'incremental\.field': required"):
        RestConnector(request("http://127.0.0.1:9", cursor=None, incremental={"param": "since"}))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgres://dept:secret-pw@db:5432/births", "needs an http:// or https://"),
        ("http://dept:secret-pw@127.0.0.1:9/?token=x", "unknown query parameter(s)"),
        ("http://:secret-pw@127.0.0.1:9/?auth=kerberos", "unknown auth scheme 'kerberos'"),
        ("http://127.0.0.1:9/?auth=api_key", "the key as the password"),
        ("http://127.0.0.1:99999/", "not a valid http(s) URL"),
    ],
)
def test_a_wrong_connection_url_is_a_config_error(url: str, reason: str) -> None:
    with pytest.raises(SourceConfigError) as caught:
        RestConnector(request(url))
    assert not isinstance(caught.value, ConnectorOptionError)
    assert reason in str(caught.value)
    assert "secret-pw" not in str(caught.value)
