"""The simulator is a pure function of its seed and the time.

A tick at a given time has the same price, size and side whatever the
simulator's start, whether it was backfilled or live: a service that rebuilds
its data after a loss shows the market it showed before.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from decimal import Decimal

import pytest

from candlewire.domain import NANOS_PER_SECOND, Candle, Quote, Trade
from candlewire.feeds.sim import HISTORY_STEP, SimFeed

T0 = 1_767_225_600 * NANOS_PER_SECOND  # 2026-01-01T00:00:00Z
SYMBOLS = ("BTCUSDT", "EURUSD", "XYZUSDT")


class Sink:
    def __init__(self, wanted: int = 0) -> None:
        self.seen_trades: list[Trade] = []
        self.seen_quotes: list[Quote] = []
        self.watermarks: dict[str, int] = {}
        self.enough = asyncio.Event()
        self.wanted = wanted

    async def trades(self, trades: Sequence[Trade]) -> None:
        self.seen_trades.extend(trades)
        if self.wanted and len(self.seen_trades) >= self.wanted:
            self.enough.set()

    async def quotes(self, quotes: Sequence[Quote]) -> None:
        self.seen_quotes.extend(quotes)

    async def watermark(self, symbol: str, time: int) -> None:
        self.watermarks[symbol] = time

    async def candles(self, candles: Sequence[Candle]) -> None:
        raise AssertionError("the simulator emits ticks, not candles")


def by_time(trades: Sequence[Trade]) -> dict[tuple[str, int], tuple[Decimal, Decimal]]:
    return {(t.symbol, t.time): (t.price, t.quantity) for t in trades}


async def backfill(end: int, minutes: int, seed: int = 7) -> Sink:
    sink = Sink()
    feed = SimFeed(SYMBOLS, seed=seed, history_minutes=minutes, clock=lambda: end)
    await feed.backfill(sink)
    return sink


async def test_history_does_not_depend_on_when_the_simulator_started() -> None:
    early = by_time((await backfill(T0 + 3_600 * NANOS_PER_SECOND, 120)).seen_trades)
    late = by_time((await backfill(T0 + 5_432 * NANOS_PER_SECOND, 90)).seen_trades)

    common = early.keys() & late.keys()
    assert len(common) >= 3 * 45 * 6  # 45 minutes of 10 s ticks overlap, per symbol
    assert {k: early[k] for k in common} == {k: late[k] for k in common}
    assert all(time % HISTORY_STEP == 0 for _, time in early)


async def test_the_seed_chooses_the_market() -> None:
    one = by_time((await backfill(T0, 10, seed=1)).seen_trades)
    two = by_time((await backfill(T0, 10, seed=2)).seen_trades)
    assert one.keys() == two.keys()
    assert sum(one[k][0] != two[k][0] for k in one) > len(one) // 2


async def test_ticks_are_a_plausible_market() -> None:
    sink = await backfill(T0, 24 * 60)
    for symbol, precision in (("BTCUSDT", 2), ("EURUSD", 5)):
        prices = [t.price for t in sink.seen_trades if t.symbol == symbol]
        assert len(prices) == 24 * 360
        assert all(p > 0 and p == p.quantize(Decimal(1).scaleb(-precision)) for p in prices)
        moves = sum(a != b for a, b in itertools.pairwise(prices))
        assert moves > len(prices) // 2  # it moves ...
        assert max(prices) / min(prices) < 2  # ... like a market, not a lottery
    (quote,) = [q for q in sink.seen_quotes if q.symbol == "EURUSD"]
    assert quote.bid < quote.ask and quote.last in (quote.bid, quote.ask)


async def test_live_ticks_are_the_ticks_history_would_have() -> None:
    """Live ticks at the times the history grid also has equal the history's."""
    now = [T0 - 5 * NANOS_PER_SECOND]

    def clock() -> int:
        now[0] += NANOS_PER_SECOND // 2  # the market's clock runs on
        return now[0]

    live = Sink(wanted=len(SYMBOLS) * 4 * 70)  # 70 s of ticks at 4 a second
    feed = SimFeed(SYMBOLS, seed=7, rate=4, history_minutes=0, watermark_interval=0, clock=clock)
    running = asyncio.create_task(feed.run(live))
    async with asyncio.timeout(30):
        await live.enough.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    times = sorted({t.time for t in live.seen_trades})
    assert all(b - a == NANOS_PER_SECOND // 4 for a, b in itertools.pairwise(times))
    history = by_time((await backfill(T0 + 60 * NANOS_PER_SECOND, 1)).seen_trades)
    live_by_time = by_time(live.seen_trades)
    assert len(history) == len(SYMBOLS) * 6
    assert {k: live_by_time[k] for k in history} == history
