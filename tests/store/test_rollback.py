"""Redis killed (SIGKILL) and restarted from an RDB snapshot taken earlier:
the same epoch, but counters behind numbers already given. The service
makes it a new dataset (as after a flush), so no stream skips a candle
silently: tokens of before are refused, and a fresh stream's history has no
hole.

Two orderings: the process that notices first is a reader (its ping or read
finds a counter behind what it saw), or the ingestor, whose write is given
a number it was given before.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest

from candlewire.domain import Source, Trade
from candlewire.errors import StoreUnavailable
from candlewire.feeds.base import FeedSink
from candlewire.store.redis import RedisStore
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec, stub_for
from tests.store.conftest import RedisServer
from tests.store.test_contract import candle
from tests.store.test_outages import until

WAIT = 15.0
MIN = 60 * 10**9
REQUEST = pb.SubscribeCandlesRequest(
    series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)], history=100, closed_only=True
)


class Replaying(ScriptedFeed):
    """A feed whose backfill is every trade it was given so far (as a
    venue's history API would give them back)."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[tuple[str, int, str, str]] = []
        self.backfills = 0

    async def backfill(self, sink: FeedSink) -> None:
        self.backfills += 1
        if self.given:
            await sink.trades(
                [Trade(s, t, Decimal(p), Decimal(q), Source.LIVE) for s, t, p, q in self.given]
            )

    async def trade(
        self, symbol: str, time: int, price: str | Decimal, quantity: str | Decimal = "1"
    ) -> None:
        self.given.append((symbol, time, str(price), str(quantity)))
        await super().trade(symbol, time, price, quantity)


async def reconnected(store: RedisStore) -> None:
    """Ping until the store's connection pool reconnected (a few attempts)."""
    for _ in range(5):
        try:
            await store.ping()
            return
        except StoreUnavailable:
            continue
    await store.ping()


def restart_from_snapshot(server: RedisServer) -> None:
    server.stop()  # SIGKILL: nothing saved since the snapshot
    server.start()  # loads dump.rdb from its directory


async def test_a_rolled_back_redis_is_a_new_dataset(own_redis: RedisServer) -> None:
    feed = Replaying()
    async with running(feed, redis_url=own_redis.url, heartbeat_interval=30) as app:
        await feed.attached()
        for i in range(3):
            await feed.trade("BTCUSDT", sec(60 * i + 1), f"{100 + i}")
        with own_redis.client() as client:
            assert client.save()  # the snapshot Redis will come back from
        for i in range(3, 6):
            await feed.trade("BTCUSDT", sec(60 * i + 1), f"{100 + i}")
        async with stub_for(app) as stub:
            call = stub.SubscribeCandles(REQUEST, timeout=WAIT)
            async for response in call:
                if response.HasField("snapshot_end"):
                    token = response.resume_token
                    break
            call.cancel()
        epoch = app.store.epoch

        restart_from_snapshot(own_redis)

        async def rotated() -> bool:
            return app.store.epoch != epoch

        await until(rotated)

        async def rebuilt() -> bool:  # from the backfill, as after a flush
            return feed.backfills >= 2

        await until(rebuilt)
        async with stub_for(app) as stub:
            resumed = pb.SubscribeCandlesRequest()
            resumed.CopyFrom(REQUEST)
            resumed.resume_token = token
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.SubscribeCandles(resumed, timeout=WAIT):
                    pass
            assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE

            # The ingestor goes on; a fresh stream's closed candles have no hole.
            await feed.trade("BTCUSDT", sec(60 * 7 + 1), "107")
            opens: list[int] = []
            call = stub.SubscribeCandles(REQUEST, timeout=WAIT)
            async for response in call:
                if response.HasField("snapshot_end"):
                    break
                opens.append(response.candle.open_time.ToNanoseconds())
            call.cancel()
        assert opens and opens == [opens[0] + MIN * i for i in range(len(opens))], opens
        assert opens[-1] == sec(60 * 6)


async def test_a_writer_given_a_number_twice_rotates_the_epoch_before_readers_read_it(
    own_redis: RedisServer,
) -> None:
    writer = RedisStore(own_redis.url)
    reader = RedisStore(own_redis.url)
    try:
        await writer.connect()
        await reader.connect()
        await writer.write_candles([candle(i) for i in range(3)])
        with own_redis.client() as client:
            assert client.save()
        await writer.write_candles([candle(i) for i in range(3, 6)])
        seen = await reader.head(["BTCUSDT"])
        assert seen == {"BTCUSDT": 6}
        epoch = writer.epoch

        restart_from_snapshot(own_redis)
        # The writer writes first, and is given numbers it was given before.
        for _ in range(3):  # redis-py reconnects on a later call
            try:
                await writer.write_candles([candle(6)])
            except StoreUnavailable as error:
                if "rolled back" in str(error):
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the writer did not notice the rollback")
        assert writer.epoch != epoch
        # A reader still at the old position learns of the new dataset.
        await reconnected(reader)
        assert reader.epoch == writer.epoch
    finally:
        await writer.close()
        await reader.close()
