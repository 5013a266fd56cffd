"""The candle cache of serving processes: the same answers as Redis.

A differential test writes random candle versions through one store and
compares every kind of ``get_candles`` read of :class:`CachedStore` (cache
first) with the plain :class:`RedisStore`, each time once the reader has
reached the store's head. Then the service: GetCandles of an API replica
against one without a cache, a flushed Redis, and Redis stopped.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import grpc
import pytest

from candlewire.app import App
from candlewire.domain import NANOS_PER_SECOND, Candle, Interval, SeriesKey, Source
from candlewire.errors import StoreUnavailable
from candlewire.flow.follow import UpdateReader
from candlewire.hub import Hub
from candlewire.store.cached import CachedStore, CandleCache, QuoteCache
from candlewire.store.redis import RedisStore
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec
from tests.store.conftest import RedisServer

WAIT = 15.0
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SERIES = [SeriesKey(s, i) for s in SYMBOLS for i in (Interval.S1, Interval.M1)]


async def until(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> None:
    """Re-check a condition until it holds (with a deadline)."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls a condition, bounded by the deadline
            await asyncio.sleep(0.01)


def candle(key: SeriesKey, index: int, revision: int, rng: random.Random) -> Candle:
    open_time = sec(index * 60)
    price = Decimal(rng.randrange(100, 200))
    return Candle(
        key.symbol,
        key.interval,
        open_time,
        open_time + 60 * NANOS_PER_SECOND,
        price,
        price + 1,
        price - 1,
        price,
        Decimal(rng.randrange(1, 50)),
        Decimal(rng.randrange(1, 5000)),
        rng.randrange(1, 9),
        rng.random() < 0.5,
        revision,
        Source.LIVE,
    )


class Writer:
    """Random versions of candles: new ones on top, corrections of any
    retained one, inserts below and between, stale revisions (ignored)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.top = dict.fromkeys(SERIES, 50)
        self.revisions: dict[tuple[SeriesKey, int], int] = {}

    def batch(self, size: int) -> list[Candle]:
        rng, out = self.rng, []
        for _ in range(size):
            key = rng.choice(SERIES)
            roll = rng.random()
            if roll < 0.45:
                self.top[key] += rng.choice((1, 1, 1, 2))
                index = self.top[key]
            elif roll < 0.8:
                index = self.top[key] - rng.randrange(0, 3)  # the forming candle and recent ones
            else:
                index = self.top[key] - rng.randrange(0, 80)  # anywhere, also below everything
            revision = self.revisions.get((key, index), -1) + 1
            if rng.random() < 0.1:
                revision = max(0, revision - 2)  # not newer: the store ignores it
            else:
                self.revisions[(key, index)] = revision
            out.append(candle(key, index, revision, rng))
        return out


def queries(
    rng: random.Random, key: SeriesKey, top: int
) -> list[tuple[int | None, int | None, int]]:
    picks: list[tuple[int | None, int | None, int]] = []
    for _ in range(40):
        start = sec(rng.randrange(top - 90, top + 3) * 60) if rng.random() < 0.6 else None
        end = sec(rng.randrange(top - 90, top + 3) * 60) if rng.random() < 0.4 else None
        if start is not None and end is not None and end <= start:
            end = None
        picks.append((start, end, rng.choice((0, 1, 2, 5, 10, 30, 60, 200))))
    return picks


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    writer = RedisStore(redis_server.url, retention=40, log_size=4096)
    reader = RedisStore(redis_server.url, retention=40, log_size=4096)
    await writer.connect()
    await reader.connect()
    yield writer, reader
    await writer.close()
    await reader.close()


@pytest.mark.parametrize("size", [1, 10, 40, 100])
async def test_the_cache_answers_as_redis_does(
    stores: tuple[RedisStore, RedisStore], size: int
) -> None:
    writer, store = stores
    rng = random.Random(size)
    source = Writer(rng)
    await writer.write_candles(source.batch(30))  # before the reader starts: seeded
    candles = CandleCache(size)
    reader = UpdateReader(store, Hub(), SERIES, QuoteCache(30), candles)
    cached = CachedStore(store, QuoteCache(30), candles)
    task = asyncio.create_task(reader.run())
    try:
        for _ in range(12):
            await writer.write_candles(source.batch(rng.randrange(1, 60)))
            head = await writer.head(SYMBOLS)

            async def caught_up(head: dict[str, int] = head) -> bool:
                return all(
                    reader.position.get(s) == head[s] and candles.answers(s) for s in SYMBOLS
                )

            await until(caught_up)
            for key in SERIES:
                for start, end, limit in queries(rng, key, source.top[key]):
                    want = await store.get_candles(key, start=start, end=end, limit=limit)
                    got = await cached.get_candles(key, start=start, end=end, limit=limit)
                    assert list(got.open_times) == list(want.open_times), (key, start, end, limit)
                    assert list(got.frames) == list(want.frames), (key, start, end, limit)
        assert candles.answered > 200  # most reads never reached Redis
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def get_candles(channel: grpc.aio.Channel) -> Callable[..., Awaitable[bytes]]:
    """GetCandles returning the response's bytes as the server sent them."""
    return channel.unary_unary(
        "/marketdata.v1.MarketDataService/GetCandles",
        request_serializer=pb.GetCandlesRequest.SerializeToString,
        response_deserializer=None,
    )


def requests(rng: random.Random, top: int) -> list[pb.GetCandlesRequest]:
    out = []
    for interval in (pb.INTERVAL_1S, pb.INTERVAL_1M):
        for _ in range(25):
            request = pb.GetCandlesRequest(
                symbol="BTCUSDT", interval=interval, page_size=rng.choice((0, 1, 5, 20, 150))
            )
            if rng.random() < 0.6:
                request.start_time.FromNanoseconds(sec(rng.randrange(top - 200, top + 2)))
            if rng.random() < 0.4:
                request.end_time.FromNanoseconds(sec(rng.randrange(top - 100, top + 5)))
                if request.HasField("start_time") and request.end_time.ToNanoseconds() <= (
                    request.start_time.ToNanoseconds()
                ):
                    request.ClearField("end_time")
            out.append(request)
    return out


def caught_up_with(app: App, other: App) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        assert app.reader is not None and app.candle_cache is not None
        try:
            head = await other.store.head(["BTCUSDT"])
        except StoreUnavailable:
            return False  # Redis is coming back
        return app.reader.position.get("BTCUSDT") == head["BTCUSDT"] and (
            app.candle_cache.answers("BTCUSDT")
        )

    return check


async def test_a_replica_answers_get_candles_as_redis_does_during_live_updates(
    redis_server: RedisServer,
) -> None:
    rng = random.Random(7)
    feed = ScriptedFeed()
    common = {"redis_url": redis_server.url, "heartbeat_interval": 30, "retention": 100}
    async with (
        running(feed, candle_cache=0, **common) as ingesting,
        running(ScriptedFeed(), role="api", candle_cache=30, **common) as replica,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingesting.port}") as plain,
        grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as cached,
    ):
        assert replica.candle_cache is not None
        await feed.attached()
        second = 0
        for _ in range(8):
            trades = []
            for _ in range(rng.randrange(5, 40)):
                second += rng.choice((0, 0, 1, 1, 2, 7))
                trades.append(("BTCUSDT", sec(second), str(rng.randrange(90, 110)), "1"))
            await feed.trades(trades)
            await until(caught_up_with(replica, ingesting))
            for request in requests(rng, second):
                want = await get_candles(plain)(request, timeout=5)
                got = await get_candles(cached)(request, timeout=5)
                assert got == want, request
        assert replica.candle_cache.answered > 100


async def test_the_cache_is_rebuilt_after_redis_is_flushed(redis_server: RedisServer) -> None:
    feed = ScriptedFeed()
    async with (
        running(feed, redis_url=redis_server.url, heartbeat_interval=30) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        cache = app.candle_cache
        assert cache is not None
        await feed.attached()
        for i in range(5):
            await feed.trade("BTCUSDT", sec(60 * i + 1), f"{100 + i}")
        await until(caught_up_with(app, app))
        request = pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M)
        before = pb.GetCandlesResponse.FromString(await get_candles(channel)(request, timeout=5))
        assert [c.close for c in before.candles] == [100, 101, 102, 103, 104]
        answered = cache.answered

        epoch = app.store.epoch
        with redis_server.client() as client:
            client.flushall()

        async def reseeded() -> bool:
            return app.store.epoch != epoch and await caught_up_with(app, app)()

        await until(reseeded)
        assert (
            pb.GetCandlesResponse.FromString(await get_candles(channel)(request, timeout=5)).candles
            == []
        )
        assert cache.answered > answered  # from the new dataset's (empty) cache

        # Candles of the new dataset (written past the lease, which the flush dropped too).
        writer = RedisStore(redis_server.url)
        await writer.connect()
        rng = random.Random(1)
        key = SeriesKey("BTCUSDT", Interval.M1)
        await writer.write_candles([candle(key, 10, 0, rng), candle(key, 11, 0, rng)])
        want = await writer.get_candles(key, start=None, end=None, limit=500)
        await writer.close()
        answered = cache.answered

        async def rebuilt() -> bool:
            return await get_candles(channel)(request, timeout=5) == b"".join(want.frames)

        await until(rebuilt)
        assert cache.answered > answered


async def test_with_redis_stopped_get_candles_is_unavailable(own_redis: RedisServer) -> None:
    feed = ScriptedFeed()
    async with (
        running(feed, redis_url=own_redis.url, heartbeat_interval=30, lease_ttl=60) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        cache = app.candle_cache
        assert cache is not None
        await feed.attached()
        await feed.trade("BTCUSDT", sec(1), "100")
        await feed.trade("BTCUSDT", sec(61), "101")
        await until(caught_up_with(app, app))
        request = pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M)
        answered = cache.answered
        await get_candles(channel)(request, timeout=5)
        assert cache.answered == answered + 1

        own_redis.stop()

        async def stopped_following() -> bool:
            return not cache.answers("BTCUSDT")

        await until(stopped_following)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get_candles(channel)(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert cache.answered == answered + 1

        own_redis.start()  # empty: a new dataset, followed again
        await until(caught_up_with(app, app))
        found = pb.GetCandlesResponse.FromString(await get_candles(channel)(request, timeout=5))
        assert found.candles == []
