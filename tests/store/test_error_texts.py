"""What a caller reads when the store fails: only its own request, and no
address of the store.

A replica's follower that finds its positions gone (Redis flushed, then
rewritten) ends every stream of its hub; each stream's error must speak of
that stream's request only. A store that cannot be reached answers
UNAVAILABLE with a generic message; its address goes to the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from candlewire.domain import Interval, SeriesKey
from candlewire.errors import DataExpired
from candlewire.flow.follow import UpdateReader
from candlewire.hub import Hub
from candlewire.store.base import Position, Update
from candlewire.store.cached import QuoteCache
from candlewire.store.redis import RedisStore
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, stub_for
from tests.store.conftest import RedisServer
from tests.store.test_contract import candle

WAIT = 10.0
BTC = SeriesKey("BTCUSDT", Interval.M1)
ETH = SeriesKey("ETHUSDT", Interval.M1)


class Gated(RedisStore):
    """Once ``hold`` is set, its next read of updates waits for ``release``
    (so the dataset can be replaced while the follower is between reads)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        if self.hold:
            self.hold = False
            self.held.set()
            await self.release.wait()
        return await super().read_updates(series, after)


async def test_streams_ended_by_a_replaced_dataset_hear_of_their_own_series_only(
    redis_server: RedisServer,
) -> None:
    writer = RedisStore(redis_server.url)
    await writer.connect()
    reader_store = Gated(redis_server.url)
    await reader_store.connect()
    hub = Hub()
    reader = UpdateReader(reader_store, hub, [BTC, ETH], QuoteCache(30))
    task = asyncio.create_task(reader.run())
    try:
        await writer.write_candles([candle(i) for i in range(3)])
        await writer.write_candles([candle(i, symbol="ETHUSDT") for i in range(3)])
        btc, eth = hub.subscribe([BTC]), hub.subscribe([ETH])
        async with asyncio.timeout(WAIT):
            while reader.position != {"BTCUSDT": 3, "ETHUSDT": 3}:
                await reader.caught_up.wait()
                await asyncio.sleep(0.01)  # the follower publishes, then waits again
        # The follower wakes for a new update and is held before its next read ...
        reader_store.hold = True
        await writer.write_candles([candle(3)])
        async with asyncio.timeout(WAIT):
            await reader_store.held.wait()
        # ... while the dataset is replaced by one in which BTCUSDT is written
        # past the follower's position, and ETHUSDT not yet.
        with redis_server.client() as client:
            client.flushall()
        await writer.connect()
        await writer.write_candles([candle(i) for i in range(10)])
        reader_store.release.set()
        errors: dict[str, str] = {}
        async with asyncio.timeout(WAIT):
            for name, subscription in (("BTCUSDT", btc), ("ETHUSDT", eth)):
                with pytest.raises(DataExpired) as info:
                    while True:
                        await subscription.next(1.0)
                errors[name] = str(info.value)
        assert "ETHUSDT" not in errors["BTCUSDT"], errors
        assert "BTCUSDT" not in errors["ETHUSDT"], errors
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reader_store.close()
        await writer.close()


async def test_unavailable_does_not_tell_callers_where_the_store_is(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    own_redis.stop()
    async with (
        running(ScriptedFeed(), redis_url=own_redis.url, heartbeat_interval=30) as app,
        stub_for(app) as stub,
    ):
        for call in (
            stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5),
            stub.GetCandles(
                pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M), timeout=5
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            details = info.value.details() or ""
            assert str(own_redis.port) not in details and "127.0.0.1" not in details, details
            assert "unavailable" in details
    # The operator still learns where: the log names the address.
    assert any(str(own_redis.port) in record.getMessage() for record in caplog.records)
