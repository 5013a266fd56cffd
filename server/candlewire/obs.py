"""Metrics: the one module that names every metric of the service.

Each :class:`Metrics` has its own ``prometheus_client`` registry (a process
may run several services in tests). Label sets are bounded: methods are the
registered ones, codes gRPC's, symbols the configured ones, caches and store
operations fixed names; no key, token or client address is ever a label.

Instruments on the request path (:class:`Metrics` attributes) are updated as
things happen; what the service already counts (the hub's queues, the
ingestor's candles, the feed's connections) is read at scrape time by
:class:`ServiceCollector`, so the hot paths pay nothing for it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "RPC_BUCKETS",
    "Metrics",
    "RpcCell",
    "RpcStats",
    "ServiceCollector",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0)


class Metrics:
    """The service's instruments, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc = RpcStats()
        r.register(self.rpc)
        self.streams_open = Gauge(
            "candlewire_streams_open", "server streams open, by method", ["method"], registry=r
        )
        self.stream_messages = Counter(
            "candlewire_stream_messages_sent",
            "messages sent on server streams, by method",
            ["method"],
            registry=r,
        )
        self.rejected = Counter(
            "candlewire_rejected_requests",
            "requests refused before their method ran, or for invalid input, by reason",
            ["reason"],
            registry=r,
        )
        self.store_duration = Histogram(
            "candlewire_store_operation_seconds",
            "store (and database) operation latency, by store and operation",
            ["store", "operation"],
            buckets=_STORE_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "candlewire_store_errors",
            "store (and database) operations that failed, by store and operation",
            ["store", "operation"],
            registry=r,
        )
        self.limiter_errors = Counter(
            "candlewire_rate_limiter_errors",
            "rate-limit checks that could not reach the shared limiter (let through)",
            registry=r,
        )
        self._streams: dict[str, tuple[Any, Any]] = {}

    def stream(self, method: str) -> tuple[Any, Any]:
        """(open gauge, messages counter) children of ``method``."""
        found = self._streams.get(method)
        if found is None:
            found = self._streams[method] = (
                self.streams_open.labels(method),
                self.stream_messages.labels(method),
            )
        return found

    def watch(self, collector: Collector) -> None:
        self.registry.register(collector)


class RpcCell:
    """One method and status code: calls, their total seconds, and how many
    fell in each of :data:`RPC_BUCKETS` (the last: above them all). Add a
    call with ``count += 1``, ``total += seconds`` and
    ``buckets[bisect_left(RPC_BUCKETS, seconds)] += 1``."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(RPC_BUCKETS) + 1)


class RpcStats(Collector):
    """``candlewire_rpc_handled_total`` and ``candlewire_rpc_duration_seconds``.

    Every call adds to plain numbers on the event loop's thread (no lock, no
    label look-up in ``prometheus_client``: this runs once per RPC); a scrape
    turns them into the two families.
    """

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], RpcCell] = {}

    def cell(self, method: str, code: str) -> RpcCell:
        """The numbers of ``method`` ending with ``code``: a caller that
        counts the same pair on every call keeps it and adds to it itself."""
        found = self._stats.get((method, code))
        if found is None:
            found = self._stats[(method, code)] = RpcCell()
        return found

    def observe(self, method: str, code: str, seconds: float) -> None:
        cell = self.cell(method, code)
        cell.count += 1
        cell.total += seconds
        cell.buckets[bisect_left(RPC_BUCKETS, seconds)] += 1

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        handled = CounterMetricFamily(
            "candlewire_rpc_handled",
            "RPCs completed, by method and gRPC status code",
            labels=["method", "code"],
        )
        duration = HistogramMetricFamily(
            "candlewire_rpc_duration_seconds",
            "RPC latency (streams: their whole life), by method and gRPC status code",
            labels=["method", "code"],
        )
        for (method, code), cell in sorted(self._stats.items()):
            handled.add_metric([method, code], cell.count)
            cumulative, running = [], 0
            for bound, n in zip((*RPC_BUCKETS, float("inf")), list(cell.buckets), strict=True):
                running += n
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
            duration.add_metric([method, code], cumulative, cell.total)
        yield handled
        yield duration


def render(metrics: Metrics) -> bytes:
    """The text exposition of ``metrics``."""
    return generate_latest(metrics.registry)


class ServiceCollector(Collector):
    """Reads the service's own counters at scrape time.

    ``source`` returns the parts to read (any may be None): ``hub``,
    ``ingestor``, ``rejections`` (:class:`~candlewire.validate.RejectionCounts`),
    ``feed``, ``candle_cache``, ``quote_cache``, ``limiter``.
    """

    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self._source = source

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        parts = self._source()
        hub = parts.get("hub")
        if hub is not None:
            subscriptions = list(getattr(hub, "_subscriptions", ()))
            depths = [len(s) for s in subscriptions]
            yield GaugeMetricFamily(
                "candlewire_stream_queue_depth_max",
                "updates queued for the most backed-up stream",
                value=max(depths, default=0),
            )
            yield GaugeMetricFamily(
                "candlewire_stream_queued_updates",
                "updates queued over every stream",
                value=sum(depths),
            )
            yield GaugeMetricFamily(
                "candlewire_subscriptions", "live-update subscriptions", value=len(hub)
            )
            yield CounterMetricFamily(
                "candlewire_slow_consumer_terminations",
                "streams ended because they fell too far behind",
                value=hub.overflowed,
            )
            yield CounterMetricFamily(
                "candlewire_stream_updates_written_directly",
                "live updates the hub wrote to waiting HTTP streams itself, not queued",
                value=hub.sunk,
            )
            lag = GaugeMetricFamily(
                "candlewire_feed_lag_seconds",
                "now minus the newest upstream event time, per symbol",
                labels=["symbol"],
            )
            now = time.time_ns()
            for symbol, event_time in sorted(hub.event_times.items()):
                lag.add_metric([symbol], max(0, now - event_time) / 1e9)
            yield lag
        ingestor = parts.get("ingestor")
        if ingestor is not None:
            yield CounterMetricFamily(
                "candlewire_candles_written",
                "candle versions written to the store",
                value=ingestor.candles_out,
            )
            yield CounterMetricFamily(
                "candlewire_trades_received", "upstream trades received", value=ingestor.trades_in
            )
            yield CounterMetricFamily(
                "candlewire_ingest_store_errors",
                "store writes of the ingestor that failed (kept and retried)",
                value=ingestor.store_errors,
            )
            yield CounterMetricFamily(
                "candlewire_rejected_inputs",
                "upstream events refused (late trades beyond the allowed lateness)",
                value=ingestor.dropped_late,
            )
        rejections = parts.get("rejections")
        if rejections is not None:
            family = CounterMetricFamily(
                "candlewire_input_rejections",
                "upstream input the validation policy refused, by symbol and reason (with a "
                "shared store: the deployment's totals, the same on every serving replica)",
                labels=["symbol", "reason"],
            )
            for symbol, rows in sorted(rejections.all().items()):
                for reason, count, _ in rows:
                    family.add_metric([symbol, reason.label], count)
            yield family
        feed = parts.get("feed")
        if feed is not None:
            streams = getattr(feed, "_streams", None)  # Binance: its combined streams
            if isinstance(streams, list) and streams:
                opened = sum(int(getattr(s, "connections", 0)) for s in streams)
                yield CounterMetricFamily(
                    "candlewire_upstream_reconnects",
                    "upstream connections opened after each stream's first",
                    value=max(0, opened - len(streams)),
                )
            limiter = getattr(feed, "limiter", None)
            used = getattr(limiter, "_used", None)
            if isinstance(used, int):
                yield GaugeMetricFamily(
                    "candlewire_upstream_request_weight",
                    "upstream request weight used in the current minute",
                    value=used,
                )
        found = parts.get("dependencies")
        if found:
            up = GaugeMetricFamily(
                "candlewire_dependency_up",
                "1 while a dependency this process uses now is usable (store, feed, history)",
                labels=["dependency"],
            )
            for name, usable in sorted(found.items()):
                up.add_metric([name], 1.0 if usable else 0.0)
            yield up
        caches = CounterMetricFamily(
            "candlewire_cache_requests",
            "reads a process-local cache answered (hit) or passed on (miss)",
            labels=["cache", "result"],
        )
        candle_cache = parts.get("candle_cache")
        if candle_cache is not None:
            caches.add_metric(["candles", "hit"], candle_cache.answered)
            caches.add_metric(["candles", "miss"], getattr(candle_cache, "missed", 0))
        quote_cache = parts.get("quote_cache")
        if quote_cache is not None:
            caches.add_metric(["quotes", "hit"], getattr(quote_cache, "hits", 0))
            caches.add_metric(["quotes", "miss"], getattr(quote_cache, "misses", 0))
        yield caches
