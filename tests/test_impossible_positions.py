"""Resume tokens naming positions the store never gave, and heartbeats of
streams whose updates are all left out.

A token with a valid checksum but a position ahead of the store's head (a
forged token, or one of a store that was rolled back) is refused with
OUT_OF_RANGE in either phase, rather than served a stream that waits for
numbers that will not come. Heartbeats follow what each stream sent: a
stream to which the hub offers only updates it already sent still gets them.
"""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from candlewire.api.tokens import Phase, ResumeToken
from candlewire.domain import Interval, SeriesKey
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec, stub_for

WAIT = 10.0
FAR = 2**64 - 1


def request(token: str = "") -> pb.SubscribeCandlesRequest:
    return pb.SubscribeCandlesRequest(
        series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)],
        history=5,
        resume_token=token,
    )


@pytest.mark.parametrize("phase", [Phase.LIVE, Phase.HISTORY])
async def test_a_position_ahead_of_the_store_is_out_of_range(phase: Phase) -> None:
    feed = ScriptedFeed()
    async with running(feed, heartbeat_interval=30) as app, stub_for(app) as stub:
        await feed.trade("BTCUSDT", sec(1), "100")
        await feed.trade("BTCUSDT", sec(61), "101")
        call = stub.SubscribeCandles(request(), timeout=WAIT)
        tokens = []
        async for response in call:
            tokens.append(response.resume_token)
            if response.HasField("snapshot_end"):
                break
        call.cancel()
        real = ResumeToken.decode(tokens[-1] if phase is Phase.LIVE else tokens[0])
        assert real.phase is phase
        forged = dataclasses.replace(real, positions=(FAR,)).encode()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.SubscribeCandles(request(forged), timeout=WAIT):
                pass
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "BTCUSDT" in (info.value.details() or "")


async def test_a_stream_offered_only_what_it_sent_still_gets_heartbeats() -> None:
    feed = ScriptedFeed()
    async with running(feed, heartbeat_interval=0.2) as app, stub_for(app) as stub:
        await feed.trade("BTCUSDT", sec(1), "100")
        before = await app.store.read_updates([SeriesKey("BTCUSDT", Interval.M1)], after={})
        assert before
        call = stub.SubscribeCandles(request(), timeout=WAIT)
        async for response in call:
            if response.HasField("snapshot_end"):
                break

        async def replay() -> None:
            # What a follower restarting from an older position publishes:
            # updates this stream already sent, faster than the interval.
            for _ in range(200):  # 10 s at most
                app.hub.publish(before)
                await asyncio.sleep(0.05)

        replaying = asyncio.create_task(replay())
        try:
            async with asyncio.timeout(WAIT):
                response = await anext(aiter(call))
            assert response.HasField("heartbeat")
            assert not replaying.done()
        finally:
            replaying.cancel()
            call.cancel()
