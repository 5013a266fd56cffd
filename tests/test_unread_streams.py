"""Streams that never read: what their history pins is bounded.

A stream holds its history snapshot until it has sent it; a client that does
not read keeps it suspended with it. Raw HTTP/2 clients that never
acknowledge data (and advertise a zero window) open streams of 2 x 1,000
candles: past the per-connection bound, or the total, a stream is refused
with RESOURCE_EXHAUSTED and a RetryInfo; what a stream held is freed when
it ends. Trade streams hold their history a chunk at a time, under the same
bounds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from candlewire.app import App
from candlewire.config import load
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.rawh2 import RawGrpc, RawStream
from tests.scripted import ScriptedFeed, running
from tests.trading import push, tape

WAIT = 20.0
PATH = "/marketdata.v1.MarketDataService/SubscribeCandles"
SERIES = [
    pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M),
    pb.Series(symbol="ETHUSDT", interval=pb.INTERVAL_1M),
]
REQUEST = pb.SubscribeCandlesRequest(series=SERIES, history=1000)
EXHAUSTED = str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])


def settings(**extra: object) -> dict[str, object]:
    return {
        "grpc_listen": "127.0.0.1:0",
        "http_listen": "",
        "symbols": "BTCUSDT,ETHUSDT",
        "intervals": "1m",
        "sim_history": 1100,
        "shutdown_grace": 1.0,
        **extra,
    }


async def history_bytes() -> int:
    """The encoded candles of REQUEST's history (what GetCandles returns for
    the latest 1,000 of each series: its response is their fields, back to back)."""
    async with (
        App(load(**settings())) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await wait_ready(channel)
        raw = channel.unary_unary(
            "/marketdata.v1.MarketDataService/GetCandles",
            request_serializer=pb.GetCandlesRequest.SerializeToString,
        )
        total = 0
        for series in SERIES:
            request = pb.GetCandlesRequest(
                symbol=series.symbol, interval=series.interval, page_size=1000
            )
            total += len(await raw(request, timeout=WAIT))
        return total


async def wait_ready(channel: grpc.aio.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="marketdata.v1.MarketDataService"), timeout=WAIT
    )
    async for response in watch:
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            watch.cancel()
            return


@pytest.fixture
async def app() -> AsyncIterator[App]:
    size = await history_bytes()
    bounded = settings(
        stream_history_bytes=int(3.5 * size),
        stream_history_bytes_per_connection=int(2.5 * size),
    )
    async with App(load(**bounded)) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            await wait_ready(channel)
        yield app


def retry_delay(stream: RawStream) -> float:
    block = stream.trailers or stream.headers or {}
    raw = block["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError(f"no RetryInfo in {status}")


async def open_unread(client: RawGrpc, count: int) -> list[RawStream]:
    """``count`` streams opened at once; returns once each is refused or sending."""
    streams = [client.open(PATH, REQUEST.SerializeToString()) for _ in range(count)]
    await client.flush()
    await client.until(lambda: all(s.headers is not None for s in streams), WAIT)
    return streams


async def test_unread_history_is_bounded_per_connection_and_in_total(app: App) -> None:
    host, port = "127.0.0.1", app.port
    async with (
        RawGrpc(host, port, reading=False, initial_window=0) as first,
        RawGrpc(host, port, reading=False, initial_window=0) as second,
    ):
        # Two streams' history fit in a connection's bound, not three.
        streams = await open_unread(first, 3)
        refused = [s for s in streams if s.status is not None]
        assert [s.status for s in refused] == [EXHAUSTED]
        assert "this connection" in refused[0].headers.get("grpc-message", "")  # type: ignore[union-attr]
        assert retry_delay(refused[0]) > 0
        assert all(not s.ended for s in streams if s not in refused)

        # Another connection: one more fits in the total, not two.
        streams = await open_unread(second, 2)
        refused = [s for s in streams if s.status is not None]
        assert [s.status for s in refused] == [EXHAUSTED]
        assert "the server" in refused[0].headers.get("grpc-message", "")  # type: ignore[union-attr]

        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.SubscribeCandles(REQUEST, timeout=WAIT):
                    pass
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # The connections are gone, and what their streams held with them: a
    # reading client is served (once the server noticed; it is told when to retry).
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        codes = []
        for _ in range(int(WAIT)):
            count, code = await history_of(stub)
            if code is None:
                assert count == 2000
                break
            codes.append(code)
            await asyncio.sleep(1.0)  # the RetryInfo's delay
        assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert code is None, "still refused after the unread streams' connections closed"


async def history_of(
    stub: marketdata_pb2_grpc.MarketDataServiceStub,
) -> tuple[int, grpc.StatusCode | None]:
    """The number of history candles a new stream sends, or the code it is refused with."""
    return await _history_count(stub.SubscribeCandles(REQUEST, timeout=WAIT))


async def _history_count(call: Any) -> tuple[int, grpc.StatusCode | None]:
    """The messages a stream sends before snapshot_end, or the code it ends with."""
    count = 0
    try:
        async for response in call:
            if response.HasField("snapshot_end"):
                return count, None
            count += 1
    except grpc.aio.AioRpcError as error:
        return count, error.code()
    finally:
        call.cancel()
    raise AssertionError("the stream ended without snapshot_end")


async def test_streams_without_history_share_a_connection() -> None:
    # They hold nothing: their history phases ending in any order free nothing twice.
    async with App(load(**settings(heartbeat_interval=0.2))) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            await wait_ready(channel)
        request = pb.SubscribeCandlesRequest(series=SERIES, history=0).SerializeToString()
        async with RawGrpc("127.0.0.1", app.port, reading=False, initial_window=0) as client:
            first, second = client.open(PATH, request), client.open(PATH, request)
            await client.flush()
            await client.until(lambda: first.headers is not None, WAIT)
            # Both wait to send snapshot_end; the second is let through first.
            for stream in (second, first):
                await client.grant(stream, 1 << 20)
                await client.until(lambda s=stream: len(s.messages) >= 2 or s.ended, WAIT)
            for stream in (first, second):
                kinds = [pb.SubscribeCandlesResponse.FromString(m).WhichOneof("event")
                         for m in stream.messages]  # fmt: skip
                # Served on: live updates or heartbeats follow, not an error.
                assert kinds[0] == "snapshot_end" and len(kinds) >= 2, (kinds, stream.status)
                assert not stream.ended, (kinds, stream.status)


# --- trade streams ------------------------------------------------------------------------

TRADES_PATH = "/marketdata.v1.MarketDataService/SubscribeTrades"
TRADES = pb.SubscribeTradesRequest(symbols=["BTCUSDT"], history=1000)


@contextlib.asynccontextmanager
async def trading(**extra: object) -> AsyncIterator[App]:
    """A service holding the same 1,200 BTCUSDT trades (the tape is seeded)."""
    feed = ScriptedFeed(("BTCUSDT",))
    async with running(feed, http_listen="", heartbeat_interval=30, **extra) as app:
        await push(feed, tape(random.Random(7), ["BTCUSDT"], 1200))
        yield app


async def trade_history_bytes() -> int:
    """The encoded trades of TRADES' history: GetTrades' latest 1,000 (its
    response is their fields back to back, as the stream holds them)."""
    async with (
        trading() as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        raw = channel.unary_unary(
            "/marketdata.v1.MarketDataService/GetTrades",
            request_serializer=pb.GetTradesRequest.SerializeToString,
        )
        return len(await raw(pb.GetTradesRequest(symbol="BTCUSDT", page_size=1000), timeout=WAIT))


async def trade_history_of(
    stub: marketdata_pb2_grpc.MarketDataServiceStub,
) -> tuple[int, grpc.StatusCode | None]:
    """The number of history trades a new stream sends, or the code it is refused with."""
    return await _history_count(stub.SubscribeTrades(TRADES, timeout=WAIT))


async def test_unread_trade_history_is_bounded_per_connection_and_in_total() -> None:
    size = await trade_history_bytes()
    # (receive times differ between runs by a few bytes a trade: well inside the margins)
    bounds = {
        "stream_history_bytes": int(3.5 * size),
        "stream_history_bytes_per_connection": int(2.5 * size),
    }
    async with trading(**bounds) as app:
        host, port = "127.0.0.1", app.port
        request = TRADES.SerializeToString()
        async with (
            RawGrpc(host, port, reading=False, initial_window=0) as first,
            RawGrpc(host, port, reading=False, initial_window=0) as second,
        ):
            streams = [first.open(TRADES_PATH, request) for _ in range(3)]
            await first.flush()
            await first.until(lambda: all(s.headers is not None for s in streams), WAIT)
            refused = [s for s in streams if s.status is not None]
            assert [s.status for s in refused] == [EXHAUSTED]
            assert "this connection" in refused[0].headers.get("grpc-message", "")  # type: ignore[union-attr]
            assert retry_delay(refused[0]) > 0
            assert all(not s.ended for s in streams if s not in refused)

            streams = [second.open(TRADES_PATH, request) for _ in range(2)]
            await second.flush()
            await second.until(lambda: all(s.headers is not None for s in streams), WAIT)
            refused = [s for s in streams if s.status is not None]
            assert [s.status for s in refused] == [EXHAUSTED]
            assert "the server" in refused[0].headers.get("grpc-message", "")  # type: ignore[union-attr]

            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
                assert await trade_history_of(stub) == (0, grpc.StatusCode.RESOURCE_EXHAUSTED)

        # The unread streams' connections are gone, and what they held with them.
        async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            codes = []
            for _ in range(int(WAIT)):
                count, code = await trade_history_of(stub)
                if code is None:
                    assert count == 1000
                    break
                codes.append(code)
                await asyncio.sleep(1.0)  # the RetryInfo's delay
            assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert code is None, "still refused after the unread streams' connections closed"
