"""Candles for the history tests."""

from __future__ import annotations

from decimal import Decimal

from candlewire.domain import Candle, Interval, Source
from candlewire.intervals import bucket_end

__all__ = ["make_candle", "series_of"]

DAY = 86_400 * 10**9


def make_candle(
    open_time: int,
    *,
    symbol: str = "BTCUSDT",
    interval: Interval = Interval.M1,
    revision: int = 0,
    price: str | None = None,
    closed: bool = True,
    source: Source = Source.LIVE,
) -> Candle:
    p = Decimal(price) if price is not None else Decimal(100 + (open_time // 10**9) % 97)
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=bucket_end(interval, open_time),
        open=p,
        high=p + 2,
        low=p - 1,
        close=p + 1,
        volume=Decimal("1.5") + revision,
        quote_volume=Decimal("150.25"),
        trade_count=3 + revision,
        closed=closed,
        revision=revision,
        source=source,
    )


def series_of(
    start: int, count: int, *, symbol: str = "BTCUSDT", interval: Interval = Interval.M1
) -> list[Candle]:
    out = []
    t = start
    for _ in range(count):
        out.append(make_candle(t, symbol=symbol, interval=interval))
        t = bucket_end(interval, t)
    return out
