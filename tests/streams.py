"""Helpers for reading SubscribeCandles streams in tests."""

from __future__ import annotations

import asyncio
from typing import Any

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

WAIT = 10.0  # seconds: a deadline for something that should happen at once


def series(symbol: str, interval: int) -> pb.Series:
    return pb.Series(symbol=symbol, interval=interval)  # type: ignore[arg-type]


async def read(
    call: Any, n: int = 1, *, heartbeats: bool = False
) -> list[pb.SubscribeCandlesResponse]:
    """The next ``n`` responses (heartbeats skipped unless asked for)."""
    out: list[pb.SubscribeCandlesResponse] = []
    async with asyncio.timeout(WAIT):
        while len(out) < n:
            response = await call.read()
            assert response is not None, "stream ended early"
            if heartbeats or response.WhichOneof("event") != "heartbeat":
                out.append(response)
    return out


def key(response: pb.SubscribeCandlesResponse) -> tuple[Any, ...]:
    """What a response says, without its token (for comparing sequences)."""
    kind = response.WhichOneof("event")
    if kind == "candle":
        c = response.candle
        return (
            "candle",
            c.symbol,
            c.interval,
            c.open_time.ToNanoseconds(),
            c.revision,
            c.closed,
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.trade_count,
        )
    return (kind,)
