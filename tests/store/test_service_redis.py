"""The service on Redis, in-process: resume tokens survive a restart."""

from __future__ import annotations

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec, stub_for
from tests.store.conftest import RedisServer
from tests.streams import key, read, series

BTC_1M = series("BTCUSDT", pb.INTERVAL_1M)


async def test_a_resume_token_works_across_a_restart_on_the_same_redis(
    redis_server: RedisServer,
) -> None:
    request = pb.SubscribeCandlesRequest(series=[BTC_1M], history=2)
    feed = ScriptedFeed()
    async with running(feed, redis_url=redis_server.url, heartbeat_interval=30) as app:
        await feed.attached()
        for i in range(3):
            await feed.trade("BTCUSDT", sec(60 * i + 1), f"{100 + i}")
        async with stub_for(app) as stub:
            call = stub.SubscribeCandles(request)
            history = await read(call, 3)
            assert [r.WhichOneof("event") for r in history] == ["candle", "candle", "snapshot_end"]
            await feed.trade("BTCUSDT", sec(200), "110")
            closed, seen = await read(call, 2)
            assert (closed.candle.closed, seen.candle.close) == (True, 110.0)
            call.cancel()
        # Written after the token was issued, before the restart.
        await feed.trade("BTCUSDT", sec(230), "111")
        await feed.trade("BTCUSDT", sec(241), "112")

    feed = ScriptedFeed()
    async with running(feed, redis_url=redis_server.url, heartbeat_interval=30) as app:
        await feed.attached()
        await feed.trade("BTCUSDT", sec(301), "113")
        async with stub_for(app) as stub:
            resumed = stub.SubscribeCandles(
                pb.SubscribeCandlesRequest(
                    series=[BTC_1M], history=2, resume_token=seen.resume_token
                )
            )
            got = await read(resumed, 4)
            # Exactly what followed the token: no gap, no repeat, in order.
            assert [
                (r.candle.open_time.ToNanoseconds(), r.candle.revision, r.candle.closed)
                for r in got
            ] == [
                (sec(180), 1, False),
                (sec(180), 2, True),
                (sec(240), 0, False),
                (sec(300), 0, False),
            ]
            assert [r.candle.close for r in got] == [111.0, 111.0, 112.0, 113.0]
            fresh = stub.SubscribeCandles(request)
            again = await read(fresh, 2)
            assert [key(r) for r in again] == [key(got[2]), key(got[3])]
            resumed.cancel()
            fresh.cancel()
