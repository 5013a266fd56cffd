"""Helpers of the trade tests: tapes with aggressor sides, and trade stream reading."""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from candlewire.domain import Side, Source, Trade
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, sec
from tests.streams import read

_SIDES = (Side.BUY, Side.SELL, Side.UNKNOWN)


def tape(
    rng: random.Random, symbols: Sequence[str], count: int, *, start: float = 0.0
) -> list[Trade]:
    """``count`` trades over ``symbols`` with random prices, sizes and sides,
    in event-time order, a few milliseconds to seconds apart."""
    out: list[Trade] = []
    t = start
    prices = {s: Decimal(100 + 10 * i) for i, s in enumerate(symbols)}
    for n in range(count):
        symbol = rng.choice(symbols)
        t += rng.choice((0.0, 0.001, 0.25, 1.0, 3.5))
        prices[symbol] += Decimal(rng.randint(-50, 50)) / 100
        out.append(
            Trade(
                symbol,
                sec(t),
                prices[symbol],
                Decimal(rng.randint(1, 5000)) / 1000,
                Source.LIVE,
                rng.choice(_SIDES),
                f"{symbol}-{start:g}-{n}",
            )
        )
    return out


async def push(feed: ScriptedFeed, trades: Sequence[Trade]) -> None:
    sink = await feed.attached()
    await sink.trades(trades)


def tkey(response: pb.SubscribeTradesResponse) -> tuple[Any, ...]:
    """What a trade stream response says, without its token."""
    kind = response.WhichOneof("event")
    if kind == "trade":
        t = response.trade
        return (
            kind,
            t.symbol,
            t.trade_id,
            t.price,
            t.quantity,
            t.side,
            t.event_time.ToNanoseconds(),
        )
    return (kind,)


async def read_trades(call: Any, n: int) -> list[pb.SubscribeTradesResponse]:
    found: list[pb.SubscribeTradesResponse] = await read(call, n)  # type: ignore[assignment]
    return found
