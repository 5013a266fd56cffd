"""The gateway as part of the service (``candlewire serve``): wired into App.

Skipped until ``Settings`` has ``http_listen`` and ``App`` owns a ``gateway``.
"""

from __future__ import annotations

import struct

import grpc
import httpx
import pytest

from candlewire.config import Settings
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec

pytestmark = pytest.mark.skipif(
    "http_listen" not in Settings.model_fields, reason="the gateway is not wired into App yet"
)


def frame(message: pb.SubscribeCandlesRequest) -> bytes:
    payload = message.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


async def test_serves_the_page_and_ends_streams_at_shutdown() -> None:
    feed = ScriptedFeed()
    async with running(feed, http_listen="127.0.0.1:0", shutdown_grace=0.5) as app:
        await feed.trade("BTCUSDT", sec(5), "100")
        gateway = app.gateway  # type: ignore[attr-defined]
        base = f"http://127.0.0.1:{gateway.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await http.get("/")).status_code == 200
            request = pb.SubscribeCandlesRequest(
                series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)], history=1
            )
            async with http.stream(
                "POST",
                "/marketdata.v1.MarketDataService/SubscribeCandles",
                content=frame(request),
                headers={"content-type": "application/grpc-web+proto"},
            ) as response:
                chunks = response.aiter_raw()
                first = await anext(chunks)
                assert first[0] == 0  # a message: the stream is live
                app.stop()
                tail = b"".join([chunk async for chunk in chunks])
    # Shutdown ended the stream with a status the page retries elsewhere.
    assert b"grpc-status: %d" % grpc.StatusCode.UNAVAILABLE.value[0] in tail
