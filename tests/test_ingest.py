"""Ingestor: venue candles (kline feeds) are numbered and de-duplicated."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from candlewire.aggregate import AggregatorConfig
from candlewire.codec import frame_to_candle
from candlewire.domain import Candle, Interval, SeriesKey, Source
from candlewire.flow.ingest import Ingestor
from candlewire.hub import Hub
from candlewire.store.memory import MemoryStore

MIN = 60 * 10**9


def kline(i: int, trades: int, *, closed: bool = False, close: str = "10") -> Candle:
    price = Decimal(close)
    return Candle(
        "BTCUSDT", Interval.M1, i * MIN, (i + 1) * MIN, price, price, price, price,
        Decimal(trades), price * trades, trades, closed, 99, Source.LIVE,
    )  # fmt: skip


async def test_venue_candles_get_revisions_and_duplicates_or_stale_versions_are_dropped() -> None:
    store, hub = MemoryStore(), Hub()
    ingestor = Ingestor(
        store, hub, ["BTCUSDT"], AggregatorConfig(intervals=(Interval.M1,)), Source.LIVE
    )
    await ingestor.candles([kline(0, 1), kline(0, 2, close="11")])
    await ingestor.candles([kline(0, 2, close="11")])  # duplicate
    await ingestor.candles([kline(0, 1)])  # reordered: older than what we have
    await ingestor.candles([kline(0, 3, closed=True, close="12")])
    await ingestor.candles([kline(0, 3, close="12")])  # forming after closed
    await ingestor.candles([replace(kline(1, 1), open_time=MIN, close_time=2 * MIN)])
    seen = []
    for update in await store.read_updates([SeriesKey("BTCUSDT", Interval.M1)], after={}):
        candle = frame_to_candle(update.frame)
        seen.append(
            (candle.open_time.ToNanoseconds(), candle.revision, candle.close, candle.closed)
        )
    assert seen == [
        (0, 0, 10.0, False),
        (0, 1, 11.0, False),
        (0, 2, 12.0, True),
        (MIN, 0, 10.0, False),
    ]
