"""RedisStore on a 3-master Redis Cluster beyond the shared contract: each
symbol's slot keeps its epoch copy and fencing token, reads span masters."""

from __future__ import annotations

import asyncio

import pytest
import redis.cluster

from candlewire.domain import Interval, SeriesKey
from candlewire.errors import DataExpired, LeaseLost, StoreUnavailable
from candlewire.store.redis import RedisStore
from tests.store.conftest import RedisClusterNodes, cluster_prefix
from tests.store.test_contract import KEY, MIN, candle
from tests.store.test_redis import quote

WAIT = 10.0


async def connected(cluster: RedisClusterNodes, prefix: str) -> RedisStore:
    store = RedisStore(cluster.url, prefix=prefix)
    await store.connect()
    return store


def raw(cluster: RedisClusterNodes) -> redis.cluster.RedisCluster:
    return redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.servers[0].port)


async def test_symbols_on_every_master_are_written_and_read_together(
    redis_cluster: RedisClusterNodes,
) -> None:
    prefix = cluster_prefix()
    store = await connected(redis_cluster, prefix)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"]
    try:
        nodes = {redis_cluster.node_of(store.keys.seq(s)) for s in symbols}
        assert len(nodes) == 3
        batch = [candle(i, symbol=s) for s in symbols for i in range(3)]
        applied = await store.write_candles(batch)
        assert len(applied) == 18
        assert await store.head(symbols) == dict.fromkeys(symbols, 3)
        keys = [SeriesKey(s, Interval.M1) for s in symbols]
        updates = await store.read_updates(keys, after=dict.fromkeys(symbols, 1))
        assert sorted((u.series.symbol, u.seq) for u in updates) == sorted(
            (s, q) for s in symbols for q in (2, 3)
        )
        snap = await store.snapshot(keys, history=2, start=None, closed_only=False)
        assert snap.position == dict.fromkeys(symbols, 3)
        assert [list(s.open_times) for s in snap.slices] == [[MIN, 2 * MIN]] * 6
        await store.put_quotes([quote(s) for s in symbols])
        assert await store.get_quotes(symbols) == [quote(s) for s in symbols]
        prices = await store.price_positions(symbols)
        assert all(p != b"0-0" for p in prices.values())
    finally:
        await store.close()


async def test_fencing_refuses_a_lower_token_on_every_symbol_the_holder_wrote(
    redis_cluster: RedisClusterNodes,
) -> None:
    prefix = cluster_prefix()
    old, new = await connected(redis_cluster, prefix), await connected(redis_cluster, prefix)
    try:
        value = await old.acquire_lease("s1", "a", ttl=30)
        assert value is not None
        old.fence("s1", value)
        assert len(await old.write_candles([candle(0)])) == 1
        assert await old.renew_lease("s1", value, 0)
        taken = await new.acquire_lease("s1", "b", ttl=30)
        assert taken is not None
        new.fence("s1", taken)
        await new.put_quotes([quote()])  # the new holder's first tick
        with pytest.raises(LeaseLost):
            await old.write_candles([candle(1)])
        with pytest.raises(LeaseLost):
            await old.put_quotes([quote(bid="1")])
        assert len(await new.write_candles([candle(1)])) == 1
    finally:
        await old.close()
        await new.close()


async def test_a_symbol_written_under_another_epoch_is_refused(
    redis_cluster: RedisClusterNodes,
) -> None:
    prefix = cluster_prefix()
    store = await connected(redis_cluster, prefix)
    try:
        await store.write_candles([candle(0)])
        with raw(redis_cluster) as client:
            assert client.get(store.keys.symbol_epoch("BTCUSDT")) == store.epoch
            client.set(store.keys.symbol_epoch("BTCUSDT"), b"elsewhen")
        with pytest.raises(StoreUnavailable, match="replaced"):
            await store.write_candles([candle(1)])
    finally:
        await store.close()


async def test_after_a_flush_every_writer_converges_on_the_new_epoch(
    redis_cluster: RedisClusterNodes,
) -> None:
    prefix = cluster_prefix()
    writer = await connected(redis_cluster, prefix)
    try:
        await writer.write_candles([candle(0), candle(0, symbol="ETHUSDT")])
        old = writer.epoch
        for server in redis_cluster.servers:  # the whole cluster flushed
            with server.client() as client:
                client.flushall()
        # A writer that has not noticed yet recreates the symbol's copy with
        # its old epoch; it is given a number it was given before, so it
        # creates the dataset's epoch anew and starts afresh.
        with pytest.raises(StoreUnavailable, match="rolled back"):
            await writer.write_candles([candle(1)])
        other = await connected(redis_cluster, prefix)
        assert other.epoch != old
        await other.close()
        await writer.ping()
        assert writer.epoch != old
        with pytest.raises(StoreUnavailable, match="replaced"):
            await writer.write_candles([candle(2)])
        # Refused once: the copy took the dataset's epoch, and writes go on.
        assert len(await writer.write_candles([candle(2), candle(1, symbol="ETHUSDT")])) == 2
    finally:
        await writer.close()


async def test_positions_ahead_of_a_lost_symbol_are_expired(
    redis_cluster: RedisClusterNodes,
) -> None:
    # A master that lost its data (no replica) restarts its symbols' counters;
    # a writer given a number it was given before makes it a new dataset, and
    # a position beyond the new counter is refused, never read as "nothing new".
    prefix = cluster_prefix()
    store = await connected(redis_cluster, prefix)
    try:
        await store.write_candles([candle(i) for i in range(5)])
        position = await store.head(["BTCUSDT"])
        names = store.keys.series(KEY)
        with raw(redis_cluster) as client:
            for name in (names.candles, names.log, names.meta, store.keys.seq("BTCUSDT")):
                client.delete(name)
            client.delete(store.keys.symbol_epoch("BTCUSDT"))
        epoch = store.epoch
        with pytest.raises(StoreUnavailable, match="rolled back"):
            await store.write_candles([candle(9)])
        assert store.epoch != epoch
        with pytest.raises(DataExpired):
            await store.read_updates([KEY], after=position)
        with pytest.raises(DataExpired):
            await store.snapshot([KEY], history=5, start=None, closed_only=False, at=position)
    finally:
        await store.close()


async def test_waiting_for_updates_of_one_symbol(redis_cluster: RedisClusterNodes) -> None:
    prefix = cluster_prefix()
    store, writer = await connected(redis_cluster, prefix), await connected(redis_cluster, prefix)
    try:
        prices = await store.price_positions(["BTCUSDT"])
        head = await store.head(["BTCUSDT"])
        waiter = asyncio.create_task(store.wait_for_updates([KEY], head, prices, block=5))
        await writer.write_candles([candle(0)])
        assert await asyncio.wait_for(waiter, WAIT) == []
        waiter = asyncio.create_task(store.wait_for_updates([KEY], {"BTCUSDT": 1}, prices, block=5))
        await writer.put_quotes([quote(bid="5")])
        assert await asyncio.wait_for(waiter, WAIT) == [("BTCUSDT", quote(bid="5"))]
    finally:
        await store.close()
        await writer.close()
