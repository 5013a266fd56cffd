"""A feed the tests drive by hand, and helpers to run the service in-process.

The feed implements the same interface as the venue feeds; a test awaits
``feed.trade(...)`` and, when it returns, the update is stored and published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from candlewire.app import App
from candlewire.config import load
from candlewire.domain import NANOS_PER_SECOND, Instrument, Quote, Source, Trade
from candlewire.feeds.base import FeedSink
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc

T0 = 1_767_225_600 * NANOS_PER_SECOND  # 2026-01-01T00:00:00Z, a Thursday


def sec(seconds: float) -> int:
    """T0 plus ``seconds``, in nanoseconds."""
    return T0 + round(seconds * NANOS_PER_SECOND)


class ScriptedFeed:
    def __init__(self, symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT")) -> None:
        self.symbols = tuple(symbols)
        self.sink: FeedSink | None = None
        self._attached = asyncio.Event()

    async def instruments(self) -> Mapping[str, Instrument]:
        return {s: Instrument(s, s[:3], s[3:], 2, 4, Source.LIVE) for s in self.symbols}

    async def backfill(self, sink: FeedSink) -> None:
        self.sink = sink

    async def run(self, sink: FeedSink) -> None:
        self.sink = sink
        self._attached.set()
        await asyncio.Event().wait()

    async def attached(self) -> FeedSink:
        await self._attached.wait()
        assert self.sink is not None
        return self.sink

    async def trade(
        self, symbol: str, time: int, price: str | Decimal, quantity: str | Decimal = "1"
    ) -> None:
        sink = await self.attached()
        await sink.trades([Trade(symbol, time, Decimal(price), Decimal(quantity), Source.LIVE)])

    async def trades(self, trades: Sequence[tuple[str, int, str, str]]) -> None:
        sink = await self.attached()
        await sink.trades(
            [Trade(s, t, Decimal(p), Decimal(q), Source.LIVE) for s, t, p, q in trades]
        )

    async def quote(
        self, symbol: str, time: int, bid: str, ask: str, receive_time: int | None = None
    ) -> None:
        import time as _time

        sink = await self.attached()
        await sink.quotes(
            [
                Quote(
                    symbol,
                    time,
                    Decimal(bid),
                    Decimal(ask),
                    Decimal("1.5"),
                    Decimal("2.5"),
                    Source.LIVE,
                    receive_time if receive_time is not None else _time.time_ns(),
                )
            ]
        )

    async def watermark(self, symbol: str, time: int) -> None:
        sink = await self.attached()
        await sink.watermark(symbol, time)


@contextlib.asynccontextmanager
async def running(feed: Any, **settings: Any) -> AsyncIterator[App]:
    """Run the service in this event loop on a free port until the block ends."""
    settings.setdefault("grpc_listen", "127.0.0.1:0")
    settings.setdefault("http_listen", "127.0.0.1:0")
    settings.setdefault("shutdown_grace", 1.0)
    # Scripted tapes jump between arbitrary prices: no outlier rule unless a test asks.
    settings.setdefault("max_jump", 0)
    async with App(load(**settings), feed=feed) as app:
        yield app


async def until_ready(app: App, within: float = 30.0) -> None:
    """Wait for readiness SERVING, watched through the health service."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="marketdata.v1.MarketDataService")
        )
        async with asyncio.timeout(within):
            async for reply in watch:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
        watch.cancel()


@contextlib.asynccontextmanager
async def stub_for(app: App) -> AsyncIterator[marketdata_pb2_grpc.MarketDataServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield marketdata_pb2_grpc.MarketDataServiceStub(channel)
