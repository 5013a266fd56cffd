"""Trade streams over Redis: one ingesting process and two API replicas."""

from __future__ import annotations

import random

import grpc
import pytest

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1.marketdata_pb2_grpc import MarketDataServiceStub
from tests.scripted import ScriptedFeed, running, stub_for, until_ready
from tests.store.conftest import RedisServer
from tests.test_trades import SYMBOLS, resumed_runs
from tests.trading import push, read_trades, tape, tkey


@pytest.mark.parametrize("seed", range(2))
async def test_resume_across_replicas_equals_an_uninterrupted_stream(
    redis_server: RedisServer, seed: int
) -> None:
    """Pieces of a stream alternate between two replicas (history and live)."""
    feed = ScriptedFeed(SYMBOLS)
    common = {"redis_url": redis_server.url, "redis_prefix": f"tr{seed}:", "heartbeat_interval": 30}
    async with (
        running(feed, role="ingest", **common) as ingest,
        running(ScriptedFeed(SYMBOLS), role="api", **common) as one,
        running(ScriptedFeed(SYMBOLS), role="api", **common) as two,
        stub_for(one) as first,
        stub_for(two) as second,
    ):
        assert ingest.trade_hub is not None
        await resumed_runs(feed, [first, second], seed, runs=4)


async def test_a_slow_stream_on_a_replica_is_ended_and_resumes_on_the_other(
    redis_server: RedisServer,
) -> None:
    feed = ScriptedFeed(SYMBOLS)
    common = {
        "redis_url": redis_server.url,
        "redis_prefix": "slow:",
        "heartbeat_interval": 30,
        "subscriber_queue_size": 8,
    }
    async with (
        running(feed, role="ingest", **common),
        running(ScriptedFeed(SYMBOLS), role="api", **common) as one,
        running(ScriptedFeed(SYMBOLS), role="api", **common) as two,
        stub_for(one) as fast_stub,
        stub_for(two) as other,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{one.port}", options=[("grpc.http2.bdp_probe", 0)]
        ) as slow_channel,
    ):
        await until_ready(one)  # following the store's updates
        await until_ready(two)
        request = pb.SubscribeTradesRequest(symbols=["BTCUSDT"])
        fast = fast_stub.SubscribeTrades(request)
        slow = MarketDataServiceStub(slow_channel).SubscribeTrades(request)
        await read_trades(fast, 1)
        await read_trades(slow, 1)
        rng = random.Random(9)
        fast_seen = []
        pushes = 0
        while one.trade_hub.overflowed == 0:
            pushes += 1
            assert pushes < 50_000, "the slow stream was never ended"
            await push(feed, tape(rng, ["BTCUSDT"], 1, start=4 * pushes))
            fast_seen += [tkey(r) for r in await read_trades(fast, 1)]
        slow_seen = []
        token = ""
        with pytest.raises(grpc.aio.AioRpcError) as error:
            while True:
                (r,) = await read_trades(slow, 1)
                slow_seen.append(tkey(r))
                token = r.resume_token
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(two.trade_hub) == 0 and len(one.trade_hub) == 1
        request.resume_token = token
        resumed = other.SubscribeTrades(request)
        slow_seen += [tkey(r) for r in await read_trades(resumed, len(fast_seen) - len(slow_seen))]
        assert slow_seen == fast_seen
        fast.cancel()
        resumed.cancel()
