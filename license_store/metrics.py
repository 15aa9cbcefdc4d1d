"""Prometheus metrics of the license API: requests and latency per route, lookups per license type,
and the node's replication lag.

Served at ``GET /metrics`` in the Prometheus text format. Each application has its own registry
(no process-global state), and routes are labelled by their template (``/v1/holders/{holder_id}/
licenses``), never by the requested path: a path carries holder IDs, and hostile paths would
otherwise blow up the label set. Requests that match no route count under ``unmatched``.

The replication gauges (:func:`exchange_gauges`) are read from the license store at each scrape:
the outbox's backlog, each child node's last applied package (labelled by its region code) and
the lag card of :func:`exchange.lag.assess`. A store without its exchange tables, or one that is
down, leaves them out; ``/readyz`` says why.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from license_store.errors import LicenseStoreError

if TYPE_CHECKING:
    from license_store.store import LicenseStore

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics", "MetricsMiddleware", "exchange_gauges"]

log = logging.getLogger("govexchange.metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """The API's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "govx_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "govx_http_request_duration_seconds",
            "Time to answer a request, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.lookups = Counter(
            "govx_license_lookups",
            "Licenses returned by holder lookups, by license type code",
            ["license_type"],
            registry=self.registry,
        )

        self._lookups_by_type: dict[str, Any] = {}

    def count_lookups(self, type_codes: Iterable[str]) -> None:
        """Count one license returned per item of ``type_codes``."""
        for code in type_codes:
            child = self._lookups_by_type.get(code)
            if child is None:  # labels() per call costs more than the increment
                child = self._lookups_by_type[code] = self.lookups.labels(code)
            child.inc()

    def render(self, gauges: Iterable[Metric] = ()) -> bytes:
        """The registry, and ``gauges`` read at this scrape, in the Prometheus text format."""
        return generate_latest(_Scrape(self.registry, tuple(gauges)))


class _Scrape(Collector):
    """One scrape: the registry's metrics, then the gauges read for it."""

    def __init__(self, registry: CollectorRegistry, gauges: tuple[Metric, ...]) -> None:
        self.registry = registry
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.gauges


def exchange_gauges(store: LicenseStore | None, now: dt.datetime | None = None) -> list[Metric]:
    """The replication gauges, read from ``store`` now (none without a store, when its exchange
    tables are missing, or when it is down). Call off the event loop: it queries the store."""
    from exchange.lag import LagLimits, LagLimitsError, assess, replication_lag

    if store is None:
        return []
    try:
        lag = replication_lag(store, now)
    except LicenseStoreError as error:
        log.debug("replication gauges left out: %s", error)
        return []
    backlog = lag.backlog
    oldest = backlog.oldest_age_s(lag.read_at)
    gauges: list[Metric] = [
        GaugeMetricFamily(
            "govx_exchange_outbox_packages",
            "Packages planned for the parent node and not acknowledged by it yet",
            value=backlog.packages,
        ),
        GaugeMetricFamily(
            "govx_exchange_outbox_rows",
            "Changes (license versions, dataset row versions) in the packages waiting for the "
            "parent node",
            value=backlog.rows,
        ),
        GaugeMetricFamily(
            "govx_exchange_outbox_oldest_age_seconds",
            "How long the oldest package waiting for the parent has waited (0: none waits)",
            value=oldest or 0.0,
        ),
    ]
    last_seq = GaugeMetricFamily(
        "govx_exchange_inbox_last_seq",
        "The last package applied from a child node, by its region code",
        labels=["sender"],
    )
    applied_age = GaugeMetricFamily(
        "govx_exchange_inbox_last_applied_age_seconds",
        "Seconds since the last package from a child node was applied, by its region code",
        labels=["sender"],
    )
    for position in lag.inbox:
        last_seq.add_metric([position.sender], position.last_seq)
        age = lag.applied_age_s(position)
        if age is not None:
            applied_age.add_metric([position.sender], age)
    gauges += [last_seq, applied_age]
    try:
        verdict = assess(backlog, LagLimits.from_env(), lag.read_at)
    except LagLimitsError as error:
        log.warning("govx_exchange_lag_level left out: %s", error)
        return gauges
    gauges.append(
        GaugeMetricFamily(
            "govx_exchange_lag_level",
            "The replication lag card: 0 green, 1 yellow, 2 red (limits: GOVX_REPLICATION_*)",
            value=verdict.rank,
        )
    )
    return gauges


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request (cheap: no request/response wrapping)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)
