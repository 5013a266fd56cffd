"""RedisStore beyond the shared contract: sharing, epochs, TTLs, outages."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from candlewire.codec import FrameRun, frame_to_candle
from candlewire.domain import Quote, Source
from candlewire.errors import LeaseLost, StoreUnavailable
from candlewire.store.redis import RedisStore
from candlewire.store.redis.keys import Keys
from tests.store.conftest import RedisServer
from tests.store.test_contract import KEY, MIN, candle

WAIT = 10.0


def quote(symbol: str = "BTCUSDT", bid: str = "100") -> Quote:
    return Quote(
        symbol, 1, Decimal(bid), Decimal("101"), Decimal("1"), Decimal("1"), Source.LIVE, 2
    )


async def connected(server: RedisServer, **options: object) -> RedisStore:
    store = RedisStore(server.url, **options)  # type: ignore[arg-type]
    await store.connect()
    return store


async def test_a_second_store_on_the_same_redis_shares_data_and_numbering(
    redis_server: RedisServer,
) -> None:
    first = await connected(redis_server)
    await first.write_candles([candle(i) for i in range(5)])
    await first.close()
    second = await connected(redis_server)
    try:
        assert second.epoch == first.epoch
        assert await second.head(["BTCUSDT"]) == {"BTCUSDT": 5}
        (applied,) = await second.write_candles([candle(5)])
        assert applied.seq == 6
        got = await second.get_candles(KEY, start=None, end=None, limit=10)
        assert list(got.open_times) == [i * MIN for i in range(6)]
        # Ranges come back as one buffer, not one reply per candle.
        assert isinstance(got.frames, FrameRun)
    finally:
        await second.close()


async def test_prefixes_separate_deployments(redis_server: RedisServer) -> None:
    a = await connected(redis_server, prefix="a:")
    b = await connected(redis_server, prefix="b:")
    try:
        await a.write_candles([candle(0)])
        assert await b.head(["BTCUSDT"]) == {"BTCUSDT": 0}
        assert len(await b.get_candles(KEY, start=None, end=None, limit=5)) == 0
        with redis_server.client() as client:
            names = {k.decode() for k in client.keys("*")}
        keys = Keys("a:")
        assert names == {keys.epoch, keys.seq("BTCUSDT"), *vars_of(keys.series(KEY)), "b:epoch"} - {
            keys.series(KEY).meta
        }
    finally:
        await a.close()
        await b.close()


def vars_of(series_keys: object) -> set[str]:
    return {getattr(series_keys, name) for name in series_keys.__slots__}  # type: ignore[attr-defined]


async def test_quotes_are_written_with_their_ttl(redis_server: RedisServer) -> None:
    store = await connected(redis_server, quote_ttl=0.3)
    try:
        await store.put_quotes([quote()])
        with redis_server.client() as client:
            ttl = client.pttl(store.keys.quote("BTCUSDT"))
        assert 0 < ttl <= 300
        assert await store.get_quotes(["BTCUSDT"]) == [quote()]
        # Every put starts the TTL again; Redis expires the key after it.
        with redis_server.client() as client:
            client.pexpire(store.keys.quote("BTCUSDT"), 100_000)
            await store.put_quotes([quote(bid="99")])
            assert 0 < client.pttl(store.keys.quote("BTCUSDT")) <= 300
            client.delete(store.keys.quote("BTCUSDT"))  # as an expiry does
        assert await store.get_quotes(["BTCUSDT"]) == [None]
    finally:
        await store.close()


async def test_a_flushed_redis_is_a_new_epoch(redis_server: RedisServer) -> None:
    store = await connected(redis_server)
    try:
        await store.write_candles([candle(0), candle(1)])
        before = store.epoch
        with redis_server.client() as client:
            client.flushall()
        await store.ping()
        assert store.epoch != before
        assert await store.head(["BTCUSDT"]) == {"BTCUSDT": 0}
        (applied,) = await store.write_candles([candle(2)])
        assert applied.seq == 1
    finally:
        await store.close()


async def test_a_write_into_a_flushed_dataset_is_refused_once_then_goes_to_the_new_epoch(
    redis_server: RedisServer,
) -> None:
    store = await connected(redis_server)
    try:
        await store.write_candles([candle(0)])
        before = store.epoch
        with redis_server.client() as client:
            client.flushall()
        # The writer must notice (and rebuild) rather than continue half a history.
        with pytest.raises(StoreUnavailable, match="replaced"):
            await store.write_candles([candle(1, close="7")])
        assert store.epoch != before
        (applied,) = await store.write_candles([candle(1, close="7")])
        assert applied.seq == 1
        (frame,) = (await store.get_candles(KEY, start=None, end=None, limit=5)).frames
        assert frame_to_candle(frame).close == 7.0
    finally:
        await store.close()


async def test_a_fenced_store_writes_only_while_its_lease_holds(
    redis_server: RedisServer,
) -> None:
    store = await connected(redis_server)
    other = await connected(redis_server)
    try:
        value = await store.acquire_lease("s1", "a", ttl=30)
        assert value is not None and value.endswith(":a")
        assert await other.acquire_lease("s1", "b", ttl=30) is None
        store.fence("s1", value)
        assert len(await store.write_candles([candle(0)])) == 1
        await store.put_quotes([quote()])
        # The lease passes to another holder (expired, here released); the
        # old holder's writes are refused inside the scripts.
        assert await store.renew_lease("s1", value, 0)
        taken = await other.acquire_lease("s1", "b", ttl=30)
        assert taken is not None and int(taken.split(":")[0]) > int(value.split(":")[0])
        with pytest.raises(LeaseLost):
            await store.write_candles([candle(1)])
        with pytest.raises(LeaseLost):
            await store.put_quotes([quote(bid="1")])
        assert not await store.renew_lease("s1", value, 30)
        other.fence("s1", taken)
        assert len(await other.write_candles([candle(1)])) == 1
        assert await other.get_quotes(["BTCUSDT"]) == [quote()]
    finally:
        await store.close()
        await other.close()


async def test_waiting_for_updates_wakes_on_candles_and_returns_new_quotes(
    redis_server: RedisServer,
) -> None:
    store = await connected(redis_server)
    writer = await connected(redis_server)
    try:
        prices = await store.price_positions(["BTCUSDT"])
        head = await store.head(["BTCUSDT"])
        waiter = asyncio.create_task(store.wait_for_updates([KEY], head, prices, block=5))
        await writer.write_candles([candle(0)])
        assert await asyncio.wait_for(waiter, WAIT) == []
        assert [u.seq for u in await store.read_updates([KEY], head)] == [1]
        waiter = asyncio.create_task(store.wait_for_updates([KEY], {"BTCUSDT": 1}, prices, block=5))
        await writer.put_quotes([quote(bid="5")])
        assert await asyncio.wait_for(waiter, WAIT) == [("BTCUSDT", quote(bid="5"))]
        assert await store.wait_for_updates([KEY], {"BTCUSDT": 1}, prices, block=0.05) == []
    finally:
        await store.close()
        await writer.close()


async def test_every_call_fails_with_store_unavailable_while_redis_is_down(
    own_redis: RedisServer,
) -> None:
    store = await connected(own_redis, timeout=0.5)
    try:
        await store.write_candles([candle(0)])
        own_redis.stop()
        calls = [
            store.ping(),
            store.head(["BTCUSDT"]),
            store.put_quotes([quote()]),
            store.get_quotes(["BTCUSDT"]),
            store.write_candles([candle(1)]),
            store.get_candles(KEY, start=None, end=None, limit=5),
            store.read_updates([KEY], after={}),
            store.snapshot([KEY], history=5, start=None, closed_only=False),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await call
        own_redis.start()  # back, empty: the store reconnects by itself
        await store.ping()
        assert await store.head(["BTCUSDT"]) == {"BTCUSDT": 0}
        (applied,) = await store.write_candles([candle(1)])
        assert applied.seq == 1
    finally:
        await store.close()


async def test_connect_fails_clearly_when_redis_is_down(own_redis: RedisServer) -> None:
    own_redis.stop()
    store = RedisStore(own_redis.url, timeout=0.5)
    with pytest.raises(StoreUnavailable, match="redis"):
        await store.connect()
    await store.close()
