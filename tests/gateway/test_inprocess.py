"""The HTTP port inside ``candlewire serve``: handlers called in-process.

A live update reaching many browser streams is framed once; a browser that
does not read meets the same bounded queue as a slow gRPC client.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import grpc
import httpx

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.gateway.test_gateway import eventually
from tests.scripted import ScriptedFeed, running, sec

SERVICE = "/marketdata.v1.MarketDataService"
GRPC_WEB = {"content-type": "application/grpc-web+proto"}
WAIT = 20.0


def _frame(message: Any) -> bytes:
    payload = message.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def _subscribe(history: int = 0) -> bytes:
    return _frame(
        pb.SubscribeCandlesRequest(
            series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)], history=history
        )
    )


class _Frames:
    """grpc-web data frames of one streamed response, as they arrive."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    async def next(self) -> tuple[bytes, pb.SubscribeCandlesResponse]:
        while True:
            if len(self._buffer) >= 5:
                flags, length = struct.unpack(">BI", self._buffer[:5])
                if len(self._buffer) >= 5 + length:
                    raw = self._buffer[: 5 + length]
                    self._buffer = self._buffer[5 + length :]
                    assert flags == 0, raw
                    return raw, pb.SubscribeCandlesResponse.FromString(raw[5:])
            self._buffer += await anext(self._chunks)


async def test_a_live_update_is_framed_once_for_every_browser_stream() -> None:
    feed = ScriptedFeed(["BTCUSDT"])
    async with (
        running(feed, intervals="1m", heartbeat_interval=300) as app,
        httpx.AsyncClient(timeout=WAIT) as http,
        AsyncExitStack() as streams,
    ):
        await feed.trade("BTCUSDT", sec(5), "100")
        assert app.gateway is not None
        url = f"http://127.0.0.1:{app.gateway.port}{SERVICE}/SubscribeCandles"
        readers: list[_Frames] = []
        for _ in range(3):
            response = await streams.enter_async_context(
                http.stream("POST", url, content=_subscribe(), headers=GRPC_WEB)
            )
            reader = _Frames(response.aiter_raw())
            async with asyncio.timeout(WAIT):
                while (await reader.next())[1].WhichOneof("event") != "snapshot_end":
                    pass
            readers.append(reader)
        before = app.gateway.frames_encoded
        await feed.trade("BTCUSDT", sec(6), "101")
        async with asyncio.timeout(WAIT):
            received = [await reader.next() for reader in readers]
        assert {message.candle.close for _, message in received} == {101.0}
        assert len({raw for raw, _ in received}) == 1  # the same bytes on every stream
        assert app.gateway.frames_encoded - before == 1  # ... framed once


async def test_a_browser_that_does_not_read_is_ended_like_a_slow_grpc_client() -> None:
    """In-process, a browser's stream is the handler's stream: when the
    browser stops reading, Granian's send waits, the handler stops taking
    updates, and the hub's bounded queue ends the subscription
    (RESOURCE_EXHAUSTED), instead of anything buffering every update."""
    feed = ScriptedFeed(["BTCUSDT"])
    async with running(feed, intervals="1m", subscriber_queue_size=8) as app:
        await feed.attached()
        assert app.gateway is not None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, ("127.0.0.1", app.gateway.port))
            body = _subscribe()
            head = (
                f"POST {SERVICE}/SubscribeCandles HTTP/1.1\r\nhost: x\r\n"
                f"content-type: application/grpc-web+proto\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode()
            await loop.sock_sendall(sock, head + body)
            await eventually(lambda: len(app.hub) == 1, "the subscription")
            overflowed = app.hub.overflowed
            minute = 60
            while len(app.hub) == 1:
                assert minute < 60 * 20_000, "the subscriber was never ended"
                batch = [("BTCUSDT", sec(minute + 60 * i), "100", "1") for i in range(200)]
                await feed.trades(batch)
                minute += 60 * 200
            pushed = minute // 60
        finally:
            sock.close()
    assert app.hub.overflowed == overflowed + 1  # ended by the hub's bounded queue
    # Each minute is a closed candle the client never read; far fewer fit in the buffers.
    assert pushed < 20_000


async def test_one_app_serves_the_same_answer_on_every_face() -> None:
    """The HTTP port and the gRPC port are one handler core: equal bytes."""
    feed = ScriptedFeed(["BTCUSDT"])
    async with running(feed, intervals="1m") as app, httpx.AsyncClient(timeout=WAIT) as http:
        await feed.quote("BTCUSDT", sec(5), "99", "101")
        assert app.gateway is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            native = await channel.unary_unary(f"{SERVICE}/GetPrice")(
                pb.GetPriceRequest(symbol="BTCUSDT").SerializeToString()
            )
        web = await http.post(
            f"http://127.0.0.1:{app.gateway.port}{SERVICE}/GetPrice",
            content=_frame(pb.GetPriceRequest(symbol="BTCUSDT")),
            headers=GRPC_WEB,
        )
        flags, length = struct.unpack(">BI", web.content[:5])
        assert flags == 0 and web.content[5 : 5 + length] == native
        connect = await http.post(
            f"http://127.0.0.1:{app.gateway.port}{SERVICE}/GetPrice",
            content=pb.GetPriceRequest(symbol="BTCUSDT").SerializeToString(),
            headers={"content-type": "application/proto"},
        )
        assert connect.content == native
