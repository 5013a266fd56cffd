"""The Binance feed against the local exchange, one scripted fault per test.

Each test runs the real service (in-process, real gRPC) on a BinanceFeed
pointed at :class:`~tests.binance.exchange.Exchange`, subscribes to every
configured series (all 16 intervals of two symbols) before the fault, keeps
that subscriber connected through it, and at the end requires that what the
subscriber holds and what GetCandles returns both equal the exchange's
ground truth: every candle, no gap, no duplicate, each series in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from candlewire.app import App
from candlewire.domain import Interval
from candlewire.feeds.binance import BinanceConfig, BinanceFeed
from candlewire.obs import render
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.binance.exchange import (
    MS,
    T0,
    WAIT,
    Collector,
    Exchange,
    SymbolSpec,
    candle_key,
    collecting,
    make_tape,
    stream_problems,
    truth_of,
)
from tests.scripted import running

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SPECS = [SymbolSpec("BTCUSDT", "BTC", "USDT"), SymbolSpec("ETHUSDT", "ETH", "USDT")]
SERIES = [(s, i) for s in SYMBOLS for i in Interval]
STEP = 2_000  # ms of exchange time per step


@dataclass
class Scenario:
    exchange: Exchange
    feed: BinanceFeed
    app: App
    collector: Collector
    now: int = T0

    async def play(self, until: int) -> None:
        """Advance the exchange clock step by step to ``until`` (ms)."""
        while self.now < until:
            self.now = min(until, self.now + STEP)
            await self.exchange.advance(self.now)

    async def synced(self, connections: int) -> None:
        """Wait until ``connections`` were opened and every series was synced over
        REST after the last of them."""
        exchange = self.exchange
        await exchange.until_connections(connections)

        def all_synced() -> bool:
            since = exchange.connected_at[-1]
            done = {
                (r.params["symbol"], r.params["interval"])
                for r in exchange.kline_requests()
                if r.at >= since and r.status == 200
            }
            return all((s, i.label) in done for s, i in SERIES)

        await exchange.until(all_synced, "the sync after connecting")

    async def check(self) -> None:
        """Subscriber and GetCandles equal the truth; the stream has no duplicate."""
        truth = truth_of(self.exchange, SERIES)
        await self.collector.until_equal(truth)
        assert stream_problems(self.collector) == []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.app.port}") as channel:
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            for (symbol, interval), want in truth.items():
                request = pb.GetCandlesRequest(symbol=symbol, interval=interval, page_size=1000)  # type: ignore[arg-type]
                request.start_time.FromNanoseconds(want[0][0])
                got: list[tuple[Any, ...]] = []
                while True:
                    response = await stub.GetCandles(request)
                    got += [candle_key(c) for c in response.candles]
                    if not response.next_page_token:
                        break
                    request.page_token = response.next_page_token
                assert got == want, f"GetCandles {symbol}@{Interval(interval).label}"

    def backfilled(self, start: int, end: int) -> list[pb.Candle]:
        """1s candles opening in [start, end) ms whose final version came from REST."""
        out = []
        for symbol in SYMBOLS:
            for open_time, candle in self.collector.view.get((symbol, Interval.S1), {}).items():
                if start * MS <= open_time < end * MS and candle.source == pb.SOURCE_BACKFILL:
                    out.append(candle)
        return out


def fast(exchange: Exchange, **overrides: Any) -> BinanceConfig:
    """Endpoints of the local exchange; delays short enough for tests."""
    values: dict[str, Any] = {
        "rest_url": exchange.rest_url,
        "ws_url": exchange.ws_url,
        "silence_timeout": 5.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "backoff_reset": 1.0,
        "open_timeout": 3.0,
    }
    values.update(overrides)
    return BinanceConfig(**values)


@contextlib.asynccontextmanager
async def scenario(**config: Any) -> AsyncIterator[Scenario]:
    """The service on a BinanceFeed, connected and synced, with a subscriber."""
    tape = make_tape(SYMBOLS, T0 - 150_000, T0 + 200_000, quiet=(T0 + 12_000, T0 + 21_000))
    async with Exchange(tape, SPECS) as exchange:
        feed = BinanceFeed(SYMBOLS, tuple(Interval), fast(exchange, **config))
        async with running(
            feed, symbols=",".join(SYMBOLS), subscriber_queue_size=100_000, heartbeat_interval=1.0
        ) as app:
            run = Scenario(exchange, feed, app, collector=None)  # type: ignore[arg-type]
            await run.synced(connections=1)
            async with collecting(app, SERIES) as collector:
                run.collector = collector
                yield run


async def test_connection_dropped_mid_candle() -> None:
    async with scenario() as run:
        await run.play(T0 + 31_000)  # the 1m candle of T0 is half done
        run.exchange.drop_connections()
        await run.play(T0 + 41_000)  # nobody is connected: these updates are lost
        await run.synced(connections=2)
        await run.play(T0 + 95_000)
        await run.check()
        assert run.feed.failures >= 1
        assert run.backfilled(T0 + 31_000, T0 + 41_000), "the lost seconds came from REST"
        # The reconnect and the request weight show in the metrics.
        families = text_string_to_metric_families(render(run.app.metrics).decode())
        values = {s.name: s.value for f in families for s in f.samples}
        assert values["candlewire_upstream_reconnects_total"] >= 1
        assert "candlewire_upstream_request_weight" in values


async def test_withheld_klines_are_fetched_before_the_next_live_candle() -> None:
    async with scenario() as run:
        await run.play(T0 + 30_000)
        start, end = T0 + 30_000, T0 + 44_000
        run.exchange.withhold = lambda stream, data: (
            "@kline_" in stream and start < data["E"] <= end
        )
        await run.play(end)
        run.exchange.withhold = None
        requests = len(run.exchange.kline_requests())
        await run.play(T0 + 80_000)
        await run.check()
        assert run.exchange.withheld > 0
        gap_fills = run.exchange.kline_requests()[requests:]
        assert any(
            int(r.params["startTime"]) <= start for r in gap_fills if "startTime" in r.params
        )
        assert run.backfilled(start + 1_000, end - 1_000)
        assert run.feed.failures == 0


async def test_duplicated_and_reordered_klines() -> None:
    rng = random.Random(5)
    carry: list[str] = []
    mangled = {"duplicated": 0, "held back": 0}

    def mangle(batch: list[str]) -> list[str]:
        """Duplicate some messages, hold some klines back a step, shuffle the rest."""
        nonlocal carry
        out, carry = carry, []
        for text in batch:
            if '"kline"' in text and rng.random() < 0.25:
                carry.append(text)
                mangled["held back"] += 1
                continue
            out.append(text)
            if rng.random() < 0.3:
                out.append(text)
                mangled["duplicated"] += 1
        rng.shuffle(out)
        return out

    async with scenario() as run:
        run.exchange.mangle = mangle
        await run.play(T0 + 70_000)

        def flush(batch: list[str]) -> list[str]:
            return [*carry, *batch]

        run.exchange.mangle = flush
        await run.play(T0 + 72_000)
        await run.check()
        assert run.feed.failures == 0
        assert min(mangled.values()) > 100


async def test_rate_limited_429_is_waited_out() -> None:
    async with scenario() as run:
        await run.play(T0 + 20_000)
        exchange = run.exchange
        exchange.fail_next(429, "1")
        before = len(exchange.requests)
        exchange.withhold = lambda stream, data: "@kline_" in stream and data["E"] <= T0 + 30_000
        await run.play(T0 + 30_000)
        exchange.withhold = None
        await run.play(T0 + 60_000)
        await run.check()
        statuses = [r.status for r in exchange.requests[before:]]
        assert 429 in statuses
        limited = next(r for r in exchange.requests[before:] if r.status == 429)
        later = [r.at - limited.at for r in exchange.requests if r.at > limited.at]
        # requests already in flight arrive at once; then nothing until Retry-After passed
        assert not [d for d in later if 0.2 < d < 0.95], later
        assert any(d >= 0.95 for d in later)


async def test_ip_ban_418_stops_rest_and_readiness_until_it_ends() -> None:
    async with scenario() as run:
        exchange = run.exchange
        async with grpc.aio.insecure_channel(f"127.0.0.1:{run.app.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service="marketdata.v1.MarketDataService")
            )
            await until_status(watch, health_pb2.HealthCheckResponse.SERVING)
            await run.play(T0 + 20_000)
            exchange.fail_next(418, "2")
            exchange.withhold = lambda stream, data: (
                "@kline_" in stream and data["E"] <= T0 + 30_000
            )
            await run.play(T0 + 30_000)
            exchange.withhold = None
            await run.play(T0 + 32_000)  # the next klines reveal the gap: REST is banned
            await until_status(watch, health_pb2.HealthCheckResponse.NOT_SERVING)
            healthy, why = run.feed.status()
            assert not healthy and "418" in why
            await run.play(T0 + 40_000)  # live data keeps flowing during the ban
            await until_status(watch, health_pb2.HealthCheckResponse.SERVING)
            watch.cancel()
        await run.play(T0 + 60_000)
        await run.check()
        assert any(r.status == 418 for r in exchange.requests)
        # requests in flight when the ban began arrive at once; then none until it ends
        during = [
            r for r in exchange.requests if exchange.banned_at + 0.2 < r.at < exchange.banned_until
        ]
        assert during == []


async def until_status(watch: Any, status: int) -> None:
    async with asyncio.timeout(WAIT):
        while (await watch.read()).status != status:
            pass


async def test_rotation_before_the_lifetime_ends_overlaps_connections() -> None:
    # 36 streams over 3 connections of 12; 5 in each URL, 7 by SUBSCRIBE
    async with scenario(connection_lifetime=1.0, streams_per_connection=12, url_streams=5) as run:
        exchange = run.exchange
        groups = 3
        assert exchange.connections == groups
        for rotations in (1, 2):
            await run.play(run.now + 10_000)
            await exchange.until_connections(groups * (rotations + 1))
        await run.play(run.now + 10_000)
        await run.check()
        assert run.feed.failures == 0
        assert exchange.max_open > groups, "replacements open before the old ones close"
        assert exchange.subscribe_requests >= exchange.connections  # 7 streams by SUBSCRIBE


async def test_server_shutdown_event_rotates_without_loss() -> None:
    async with scenario() as run:
        exchange = run.exchange
        await run.play(T0 + 20_000)
        retiring = await exchange.server_shutdown()
        await exchange.until(lambda: exchange.connections >= 2, "a replacement connection")
        await run.play(T0 + 30_000)
        await exchange.until(lambda: all(c not in exchange.clients for c in retiring), "old closed")
        await run.play(T0 + 60_000)
        await run.check()
        assert run.feed.failures == 0
        assert exchange.max_open == 2


async def test_silent_connection_is_replaced() -> None:
    async with scenario(silence_timeout=0.5) as run:
        exchange = run.exchange
        await run.play(T0 + 20_000)
        exchange.mute()
        await run.play(T0 + 30_000)  # sent to nobody: the connection is open but mute
        await run.synced(connections=2)
        await run.play(T0 + 60_000)
        await run.check()
        assert run.feed.failures >= 1
        assert run.backfilled(T0 + 20_000, T0 + 30_000)
