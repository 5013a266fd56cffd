"""Health (liveness, readiness, shutdown) and server reflection over a real channel.

Readiness changes are observed on the Health Watch stream with deadlines,
never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from candlewire.app import App
from candlewire.config import load
from candlewire.domain import Quote, SeriesKey, Source
from candlewire.errors import StoreUnavailable
from candlewire.feeds.base import FeedSink
from candlewire.store.base import CandleSlice, Store
from candlewire.store.memory import MemoryStore
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.scripted import ScriptedFeed, running, sec

READINESS = "marketdata.v1.MarketDataService"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Status = health_pb2.HealthCheckResponse.ServingStatus


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield channel


class Watch:
    """A Health Watch stream of one service, read with deadlines."""

    def __init__(self, channel: grpc.aio.Channel, service: str) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        self.call = stub.Watch(health_pb2.HealthCheckRequest(service=service))
        self.seen: list[Status] = []

    async def next(self, within: float) -> Status:
        async with asyncio.timeout(within):
            response = await self.call.read()
        assert response is not grpc.aio.EOF, "the Watch stream ended"
        assert isinstance(response, health_pb2.HealthCheckResponse)
        self.seen.append(response.status)
        return response.status

    async def until(self, status: Status, within: float) -> None:
        """Read until ``status`` is reported; fail after ``within`` seconds.

        The deadline is an ``asyncio.timeout`` scope rather than ``wait_for``
        per read, so a read completes in as few loop steps as any other read
        (the shutdown test compares the order of two streams).
        """
        try:
            async with asyncio.timeout(within):
                while await self.next(within) != status:
                    pass
        except TimeoutError:
            pytest.fail(f"no {Status.Name(status)} within {within}s: {self.seen}")

    def cancel(self) -> None:
        self.call.cancel()


async def test_liveness_is_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert response.status == SERVING


async def test_health_of_an_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_readiness_is_serving_once_the_feed_is_fresh(
    feed: ScriptedFeed, channel: grpc.aio.Channel
) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    watch = Watch(channel, READINESS)
    # Backfill is done but nothing was received yet: not ready.
    assert await watch.next(5) == NOT_SERVING
    check = await stub.Check(health_pb2.HealthCheckRequest(service=READINESS), timeout=5)
    assert check.status == NOT_SERVING

    await feed.quote("BTCUSDT", sec(1), "100", "101")

    await watch.until(SERVING, 5)
    check = await stub.Check(health_pb2.HealthCheckRequest(service=READINESS), timeout=5)
    assert check.status == SERVING
    watch.cancel()


async def test_readiness_follows_feed_staleness() -> None:
    feed = ScriptedFeed()
    async with (
        running(feed, feed_stale_after=0.5) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        watch = Watch(channel, READINESS)
        assert await watch.next(5) == NOT_SERVING

        await feed.watermark("BTCUSDT", sec(1))
        last_event = time.monotonic()
        await watch.until(SERVING, 5)

        # No more events: not ready once feed_stale_after has passed, not before.
        await watch.until(NOT_SERVING, 5)
        assert time.monotonic() - last_event >= 0.45

        # Liveness is not affected by a stale feed.
        stub = health_pb2_grpc.HealthStub(channel)
        live = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert live.status == SERVING

        # Events flow again: ready again.
        await feed.trade("BTCUSDT", sec(2), "100", "1")
        await watch.until(SERVING, 5)
        assert watch.seen == [NOT_SERVING, SERVING, NOT_SERVING, SERVING]
        watch.cancel()


async def test_shutdown_reports_not_serving_before_streams_end() -> None:
    feed = ScriptedFeed()
    async with (
        running(feed, heartbeat_interval=0.2) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await feed.trade("BTCUSDT", sec(1), "100", "1")
        watch = Watch(channel, READINESS)
        await watch.until(SERVING, 5)
        liveness = Watch(channel, "")
        await liveness.until(SERVING, 5)

        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        stream = stub.SubscribeCandles(
            pb.SubscribeCandlesRequest(
                series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)], history=10
            )
        )
        async with asyncio.timeout(5):
            first = await stream.read()
            second = await stream.read()
        assert isinstance(first, pb.SubscribeCandlesResponse)
        assert first.WhichOneof("event") == "candle"
        assert isinstance(second, pb.SubscribeCandlesResponse)
        assert second.WhichOneof("event") == "snapshot_end"

        events: list[str] = []

        async def watch_health() -> None:
            await watch.until(NOT_SERVING, 5)
            events.append("readiness NOT_SERVING")

        async def drain_stream() -> grpc.StatusCode:
            try:
                while await stream.read() is not grpc.aio.EOF:
                    pass  # heartbeats or candles until the stream ends
            except grpc.aio.AioRpcError as error:
                events.append("stream ended")
                return error.code()
            events.append("stream ended")
            return grpc.StatusCode.OK

        health_task = asyncio.create_task(watch_health())
        stream_task = asyncio.create_task(drain_stream())
        app.stop()
        async with asyncio.timeout(5):
            code = await stream_task
            await health_task

        assert code == grpc.StatusCode.UNAVAILABLE
        assert events == ["readiness NOT_SERVING", "stream ended"]
        await liveness.until(NOT_SERVING, 5)  # every service, in graceful shutdown
        watch.cancel()
        liveness.cancel()


# --------------------------------------------------------------------------
# Readiness: backfill and store
# --------------------------------------------------------------------------


class GatedFeed(ScriptedFeed):
    """A scripted feed whose backfill sends a quote, then waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.backfilling = asyncio.Event()

    async def backfill(self, sink: FeedSink) -> None:
        await sink.quotes(
            [
                Quote(
                    "BTCUSDT",
                    sec(1),
                    Decimal(100),
                    Decimal(101),
                    Decimal(1),
                    Decimal(1),
                    Source.BACKFILL,
                    time.time_ns(),
                )
            ]
        )
        self.backfilling.set()
        await self.gate.wait()
        await super().backfill(sink)


class BreakableStore(MemoryStore):
    """The memory store, except that reads and ping fail while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("store is down (test)")

    async def ping(self) -> None:
        self._check()

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        self._check()
        return await super().get_quotes(symbols)

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        self._check()
        return await super().get_candles(series, start=start, end=end, limit=limit)


@contextlib.asynccontextmanager
async def serving(feed: ScriptedFeed, store: Store | None = None) -> AsyncIterator[App]:
    """Like ``tests.scripted.running``, with a store of the test's choice."""
    settings = load(grpc_listen="127.0.0.1:0", shutdown_grace=1.0)
    async with App(settings, feed=feed, store=store) as app:
        yield app


async def test_readiness_waits_for_the_backfill() -> None:
    feed = GatedFeed()
    async with (
        serving(feed) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        async with asyncio.timeout(5):
            await feed.backfilling.wait()
        watch = Watch(channel, READINESS)
        assert await watch.next(5) == NOT_SERVING
        # The API already answers, from what the backfill stored ...
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)).price
        assert price.source == pb.SOURCE_BACKFILL
        # ... but the service is not ready while the backfill runs, although data
        # arrived (health is re-evaluated every 0.2 s: this is three rounds).
        change = asyncio.create_task(watch.next(10))
        done, _ = await asyncio.wait({change}, timeout=0.6)
        assert not done, f"readiness changed during the backfill: {watch.seen}"

        feed.gate.set()
        await feed.watermark("BTCUSDT", sec(2))
        async with asyncio.timeout(5):
            assert await change == SERVING
        watch.cancel()


async def test_readiness_follows_the_store() -> None:
    feed = ScriptedFeed()
    store = BreakableStore()
    async with (
        serving(feed, store) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await feed.quote("BTCUSDT", sec(1), "100", "101")
        watch = Watch(channel, READINESS)
        await watch.until(SERVING, 5)

        store.down = True
        await watch.until(NOT_SERVING, 5)
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetCandles(
                pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        live = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert live.status == SERVING  # the process is alive; only readiness fails

        store.down = False
        await watch.until(SERVING, 5)
        price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)).price
        assert price.bid == 100.0
        watch.cancel()


# --------------------------------------------------------------------------
# Reflection
# --------------------------------------------------------------------------


async def reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(request)
    async with asyncio.timeout(5):
        response = await call.read()
    await call.done_writing()
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    return response


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    response = await reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {s.name for s in response.list_services_response.service}
    assert {READINESS, HEALTH, REFLECTION} <= names


async def test_reflection_describes_the_market_data_service(channel: grpc.aio.Channel) -> None:
    response = await reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=READINESS)
    )

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    (proto,) = [f for f in files if f.package == "marketdata.v1"]
    assert proto.name == "marketdata/v1/marketdata.proto"
    (service,) = proto.service
    assert service.name == "MarketDataService"
    methods = {m.name: m for m in service.method}
    assert set(methods) == {
        "GetPrice",
        "BatchGetPrices",
        "GetCandles",
        "SubscribeCandles",
        "ListSymbols",
        "GetRecentTicks",
        "GetTrades",
        "SubscribeTrades",
        "GetVolumeProfile",
    }
    assert methods["SubscribeCandles"].server_streaming
    assert methods["SubscribeTrades"].server_streaming
    assert not methods["GetCandles"].server_streaming
    assert methods["GetCandles"].output_type == ".marketdata.v1.GetCandlesResponse"


async def test_reflection_of_an_unknown_symbol_is_not_found(channel: grpc.aio.Channel) -> None:
    response = await reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Thing")
    )
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
