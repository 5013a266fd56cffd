"""The service on Redis when Redis goes away, comes back, or comes back empty.

The real redis-server is killed and restarted; readiness is observed on the
Health Watch stream and data through the API, each with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest

from candlewire.app import App
from candlewire.feeds.base import FeedSink
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec, stub_for
from tests.store.conftest import RedisServer
from tests.test_health import NOT_SERVING, READINESS, SERVING, Watch

WAIT = 15.0


async def until(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> None:
    """Re-check a condition on the running service until it holds (with a deadline)."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls the service, bounded by the deadline
            await asyncio.sleep(0.05)


async def candles(app: App) -> list[tuple[int, bool, float]]:
    async with stub_for(app) as stub:
        found = await stub.GetCandles(
            pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M), timeout=5
        )
    return [(c.open_time.ToNanoseconds(), c.closed, c.close) for c in found.candles]


async def test_redis_down_at_start_then_lost_while_running_then_back(
    persistent_redis: RedisServer,
) -> None:
    persistent_redis.stop()
    feed = ScriptedFeed()
    async with (
        running(feed, redis_url=persistent_redis.url, lease_ttl=60, heartbeat_interval=30) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        watch = Watch(channel, READINESS)
        assert await watch.next(WAIT) == NOT_SERVING
        stub = pb_stub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        persistent_redis.start()  # the service connects by itself
        await feed.attached()
        await feed.trade("BTCUSDT", sec(1), "100")
        await feed.quote("BTCUSDT", sec(1), "100", "101")
        await watch.until(SERVING, WAIT)

        persistent_redis.stop()
        await watch.until(NOT_SERVING, WAIT)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetCandles(
                pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # Candles that close meanwhile are kept in memory ...
        for i, price in ((1, "101"), (2, "102"), (3, "103")):
            await feed.trade("BTCUSDT", sec(60 * i + 1), price)
        assert app.ingestor is not None and app.ingestor.buffered >= 3

        persistent_redis.start()  # with its data: the same dataset
        await watch.until(SERVING, WAIT)

        async def written() -> bool:
            return (await candles(app))[:3] == [
                (sec(0), True, 100.0),
                (sec(60), True, 101.0),
                (sec(120), True, 102.0),
            ]

        await until(written)  # ... and written once Redis is back
        assert app.ingestor.buffered == 0 and app.ingestor.buffer_dropped == 0
        watch.cancel()


class HistoryFeed(ScriptedFeed):
    """A scripted feed whose backfill is three known minutes of BTC trades."""

    async def backfill(self, sink: FeedSink) -> None:
        self.backfills = getattr(self, "backfills", 0) + 1
        for i in range(3):
            await sink_trade(sink, sec(60 * i + 5), f"{200 + i}")
        await sink.watermark("BTCUSDT", sec(180))
        await sink.watermark("ETHUSDT", sec(180))
        self.sink = sink


async def sink_trade(sink: FeedSink, time: int, price: str) -> None:
    from decimal import Decimal

    from candlewire.domain import Source, Trade

    await sink.trades([Trade("BTCUSDT", time, Decimal(price), Decimal(1), Source.LIVE)])


async def test_a_flushed_redis_is_rebuilt_from_the_backfill(redis_server: RedisServer) -> None:
    feed = HistoryFeed()
    async with running(feed, redis_url=redis_server.url, heartbeat_interval=30) as app:
        expected = [(sec(0), True, 200.0), (sec(60), True, 201.0), (sec(120), True, 202.0)]

        async def rebuilt() -> bool:
            return (await candles(app))[:3] == expected

        await until(rebuilt)
        before = app.store.epoch
        with redis_server.client() as client:
            client.flushall()

        async def replaced() -> bool:  # until then replicas may answer what they had read
            return app.store.epoch != before

        await until(replaced)
        await until(rebuilt)
        assert feed.backfills >= 2  # rebuilt (the flush also dropped the lease)


def pb_stub(channel: grpc.aio.Channel) -> object:
    from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc

    return marketdata_pb2_grpc.MarketDataServiceStub(channel)
