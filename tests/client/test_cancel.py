"""Cancelling a task that consumes a subscription ends it, whenever the
cancellation comes: at random moments while messages flow, in many tries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc

from candlewire_client import CandlewireClient
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.client.conftest import FakeService

WAIT = 10.0
TRIES = 300


async def _endless(
    request: pb.SubscribeCandlesRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[pb.SubscribeCandlesResponse]:
    number = 0
    while True:
        number += 1
        yield pb.SubscribeCandlesResponse(
            candle=pb.Candle(symbol="BTCUSDT", interval=pb.INTERVAL_1M, revision=number),
            resume_token=str(number),
        )


async def test_a_consumer_cancelled_while_messages_flow_stops(fake: FakeService) -> None:
    fake.handlers["SubscribeCandles"] = _endless
    await fake.start()
    rng = random.Random(7)
    async with CandlewireClient(fake.target) as client:
        for _ in range(TRIES):
            received = asyncio.Event()
            wanted = rng.randrange(1, 20)

            async def consume(wanted: int = wanted, received: asyncio.Event = received) -> None:
                seen = 0
                async for _event in client.subscribe_candles("BTCUSDT@1m"):
                    seen += 1
                    if seen == wanted:
                        received.set()

            task = asyncio.create_task(consume())
            await received.wait()
            # Then at a random moment, not in step with the stream's reads.
            await asyncio.sleep(rng.random() * 0.003)
            task.cancel()
            async with asyncio.timeout(WAIT):
                await asyncio.wait({task})
            assert task.cancelled()
