"""The HTTP port inside ``candlewire serve``: handlers called in-process.

A live update reaching many browser streams is framed once; a browser that
does not read meets the same bounded queue as a slow gRPC client.
"""

from __future__ import annotations

import asyncio
import json
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
        raw = await self.next_raw()
        return raw, pb.SubscribeCandlesResponse.FromString(raw[5:])

    async def next_raw(self) -> bytes:
        """The next data frame (Connect's envelopes are framed alike)."""
        while True:
            if len(self._buffer) >= 5:
                flags, length = struct.unpack(">BI", self._buffer[:5])
                if len(self._buffer) >= 5 + length:
                    raw = self._buffer[: 5 + length]
                    self._buffer = self._buffer[5 + length :]
                    assert flags == 0, raw
                    return raw
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


def _counted(metrics: str, method: str) -> float:
    prefix = f'candlewire_stream_messages_sent_total{{method="{method}"}} '
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


async def test_a_waiting_browser_stream_is_written_by_the_publisher() -> None:
    """A live update reaching HTTP streams that wait is written to each by the
    hub's publish (``hub.sunk``), without waking their tasks; the messages
    are the gRPC port's, byte for byte (resume tokens included), and the
    messages metric counts them."""
    feed = ScriptedFeed(["BTCUSDT"])
    settings: dict[str, Any] = {"heartbeat_interval": 300, "metrics_listen": "127.0.0.1:0"}
    async with (
        running(feed, intervals="1m", **settings) as app,
        httpx.AsyncClient(timeout=WAIT) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await feed.trade("BTCUSDT", sec(5), "100")
        assert app.gateway is not None
        url = f"http://127.0.0.1:{app.gateway.port}{SERVICE}/SubscribeCandles"
        metrics_url = f"http://127.0.0.1:{app.gateway.port}/metrics"
        method = f"{SERVICE}/SubscribeCandles"
        counted = _counted((await http.get(metrics_url)).text, method)
        native = channel.unary_stream(method)(_subscribe()[5:])
        received: list[list[bytes]] = [[], [], [], []]
        as_json: list[dict[str, Any]] = []
        async with AsyncExitStack() as streams:
            readers: list[_Frames] = []
            for content_type in (
                "application/grpc-web+proto",
                "application/grpc-web",
                "application/connect+proto",
                "application/connect+json",
            ):
                body = _subscribe()
                if content_type.endswith("json"):
                    request = {"series": [{"symbol": "BTCUSDT", "interval": "INTERVAL_1M"}]}
                    text = json.dumps(request).encode()
                    body = struct.pack(">BI", 0, len(text)) + text
                response = await streams.enter_async_context(
                    http.stream("POST", url, content=body, headers={"content-type": content_type})
                )
                readers.append(_Frames(response.aiter_raw()))

            async def next_messages() -> None:
                async with asyncio.timeout(WAIT):
                    for reader, into in zip(readers[:3], received[:3], strict=True):
                        into.append((await reader.next_raw())[5:])
                    as_json.append(json.loads((await readers[3].next_raw())[5:]))
                    received[3].append(await native.read())  # the gRPC port's

            while (
                not received[0]
                or pb.SubscribeCandlesResponse.FromString(received[0][-1]).WhichOneof("event")
                != "snapshot_end"
            ):
                await next_messages()
            # The first update may find a stream not yet waiting (it is then
            # queued): once a stream has sent an update, it waits.
            await feed.trade("BTCUSDT", sec(6), "101")
            await next_messages()
            sunk = app.hub.sunk
            for second in range(7, 12):
                await feed.trade("BTCUSDT", sec(second), str(95 + second))
                await next_messages()
            assert app.hub.sunk - sunk == 4 * 5  # the native stream's are queued
            native.cancel()
        closes = [pb.SubscribeCandlesResponse.FromString(m).candle.close for m in received[3][-6:]]
        assert closes == [101.0, 102.0, 103.0, 104.0, 105.0, 106.0]
        assert received[0] == received[1] == received[2] == received[3]
        assert [event["candle"]["close"] for event in as_json[-6:]] == closes
        for event, message in zip(as_json, received[3], strict=True):  # the same tokens
            token = pb.SubscribeCandlesResponse.FromString(message).resume_token
            assert event["resumeToken"] == token
        # Counted when each stream ends: what the publisher wrote as well.
        sent = sum(len(messages) for messages in received) + len(as_json)
        async with asyncio.timeout(WAIT):
            while (moved := _counted((await http.get(metrics_url)).text, method) - counted) < sent:
                pass  # each look is an HTTP call: the streams' ends go on meanwhile
        assert moved == sent


async def test_a_waiting_browser_trade_stream_is_written_by_the_publisher() -> None:
    """The trade stream's live phase takes the same path: a batch of trades
    reaching a waiting grpc-web stream is written by the publisher, and the
    bytes are the gRPC port's."""
    feed = ScriptedFeed(["BTCUSDT"])
    async with (
        running(feed, intervals="1m", heartbeat_interval=300) as app,
        httpx.AsyncClient(timeout=WAIT) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
        AsyncExitStack() as streams,
    ):
        await feed.trade("BTCUSDT", sec(5), "100")
        assert app.gateway is not None
        request = pb.SubscribeTradesRequest(symbols=["BTCUSDT"])
        method = f"{SERVICE}/SubscribeTrades"
        native = channel.unary_stream(method)(request.SerializeToString())
        response = await streams.enter_async_context(
            http.stream(
                "POST",
                f"http://127.0.0.1:{app.gateway.port}{method}",
                content=_frame(request),
                headers=GRPC_WEB,
            )
        )
        web = _Frames(response.aiter_raw())
        web_messages: list[bytes] = []
        native_messages: list[bytes] = []

        async def read(count: int) -> None:
            async with asyncio.timeout(WAIT):
                for _ in range(count):
                    web_messages.append((await web.next())[0][5:])
                    native_messages.append(await native.read())

        while not web_messages or not pb.SubscribeTradesResponse.FromString(
            web_messages[-1]
        ).HasField("snapshot_end"):
            await read(1)
        history = len(web_messages)
        await feed.trade("BTCUSDT", sec(6), "101")  # the stream may not be waiting yet
        await read(1)
        sunk = app.trade_hub.sunk
        await feed.trades([("BTCUSDT", sec(7), "102", "1"), ("BTCUSDT", sec(8), "103", "2")])
        await read(2)
        assert app.trade_hub.sunk - sunk == 2  # one run, written trade by trade
        native.cancel()
    assert web_messages == native_messages
    live = web_messages[history:]
    prices = [pb.SubscribeTradesResponse.FromString(m).trade.price for m in live]
    assert prices == [101.0, 102.0, 103.0]
