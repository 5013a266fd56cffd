"""The simulated feed: a seeded random walk of trades and quotes.

Everything it produces is marked ``Source.SIMULATED``. Prices move by a
geometric random walk quantised to each symbol's precision; every tick emits
one trade at the bid or the ask and a new quote. At start-up it backfills
``history_minutes`` of trades (one every ten simulated seconds) so the
service has history at once. Event times come from the simulator's clock,
which is the only venue clock there is.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from candlewire.domain import NANOS_PER_SECOND, Instrument, Quote, Source, Trade
from candlewire.feeds.base import FeedSink
from candlewire.tasks import checkpoint

__all__ = ["SimFeed", "SimProfile"]


@dataclass(frozen=True, slots=True)
class SimProfile:
    price: float
    price_precision: int
    quantity_precision: int
    base: str
    quote: str
    volatility: float  # per sqrt(second), relative
    spread_ticks: int
    size: float  # typical trade size


_PROFILES = {
    "BTCUSDT": SimProfile(65_000.0, 2, 5, "BTC", "USDT", 0.0004, 1, 0.05),
    "ETHUSDT": SimProfile(3_500.0, 2, 4, "ETH", "USDT", 0.0005, 1, 0.8),
    "SOLUSDT": SimProfile(150.0, 2, 2, "SOL", "USDT", 0.0007, 1, 12.0),
    "EURUSD": SimProfile(1.0850, 5, 0, "EUR", "USD", 0.00005, 2, 100_000.0),
    "GBPUSD": SimProfile(1.2700, 5, 0, "GBP", "USD", 0.00006, 2, 100_000.0),
    "USDJPY": SimProfile(150.00, 3, 0, "USD", "JPY", 0.00006, 2, 100_000.0),
}


def _profile(symbol: str) -> SimProfile:
    known = _PROFILES.get(symbol)
    if known is not None:
        return known
    quote = next((q for q in ("USDT", "USDC", "USD", "EUR", "BTC") if symbol.endswith(q)), "USD")
    base = symbol[: -len(quote)] if symbol.endswith(quote) and symbol != quote else symbol
    return SimProfile(100.0, 2, 3, base, quote, 0.0005, 1, 1.0)


class _Walk:
    """The random walk of one symbol."""

    def __init__(self, symbol: str, profile: SimProfile, seed: int) -> None:
        self.symbol = symbol
        self.profile = profile
        self.rng = random.Random(seed ^ zlib.crc32(symbol.encode()))
        self.tick = Decimal(1).scaleb(-profile.price_precision)
        self.lot = Decimal(1).scaleb(-profile.quantity_precision)
        self.mid = profile.price

    def step(self, now: int, dt: float, receive_time: int) -> tuple[Trade, Quote]:
        p = self.profile
        self.mid *= math.exp(self.rng.gauss(0.0, p.volatility * math.sqrt(max(dt, 1e-3))))
        half = self.tick * p.spread_ticks / 2
        mid = Decimal(repr(self.mid)).quantize(self.tick)
        bid = (mid - half).quantize(self.tick, rounding="ROUND_FLOOR")
        ask = bid + self.tick * p.spread_ticks
        size = Decimal(repr(p.size * self.rng.lognormvariate(0.0, 0.8))).quantize(self.lot)
        size = max(size, self.lot)
        price = ask if self.rng.random() < 0.5 else bid
        trade = Trade(self.symbol, now, price, size, Source.SIMULATED)
        depth = Decimal(repr(p.size * 5)).quantize(self.lot)
        quote = Quote(
            self.symbol, now, bid, ask, depth, depth, Source.SIMULATED, receive_time, last=price
        )
        return trade, quote


class SimFeed:
    """Implements :class:`~candlewire.feeds.base.Feed` with a random walk."""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        rate: float = 4.0,
        seed: int = 1,
        history_minutes: int = 1440,
        watermark_interval: float = 0.25,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._walks = [_Walk(s, _profile(s), seed) for s in symbols]
        self._rate = rate
        self._history_minutes = history_minutes
        self._watermark_interval = watermark_interval
        self._clock = clock

    async def instruments(self) -> Mapping[str, Instrument]:
        return {
            w.symbol: Instrument(
                w.symbol,
                w.profile.base,
                w.profile.quote,
                w.profile.price_precision,
                w.profile.quantity_precision,
                Source.SIMULATED,
            )
            for w in self._walks
        }

    async def backfill(self, sink: FeedSink) -> None:
        if not self._history_minutes:
            return
        end = self._clock()
        step = 10 * NANOS_PER_SECOND
        start = end - self._history_minutes * 60 * NANOS_PER_SECOND
        for walk in self._walks:
            trades: list[Trade] = []
            quote: Quote | None = None
            t = start - start % step
            while t < end:
                trade, quote = walk.step(t, 10.0, end)
                trades.append(trade)
                t += step
            await sink.trades(trades)
            if quote is not None:
                await sink.quotes([replace(quote, receive_time=self._clock())])
            await sink.watermark(walk.symbol, end)

    async def run(self, sink: FeedSink) -> None:
        period = 1.0 / self._rate
        loop = asyncio.get_running_loop()
        last_watermark = 0.0
        last = self._clock()
        while True:
            checkpoint()
            await asyncio.sleep(min(period, self._watermark_interval))
            now = self._clock()
            dt = (now - last) / NANOS_PER_SECOND
            if dt >= period:
                last = now
                trades: list[Trade] = []
                quotes: list[Quote] = []
                for walk in self._walks:
                    trade, quote = walk.step(now, dt, now)
                    trades.append(trade)
                    quotes.append(quote)
                await sink.trades(trades)
                await sink.quotes(quotes)
            if loop.time() - last_watermark >= self._watermark_interval:
                last_watermark = loop.time()
                for walk in self._walks:
                    await sink.watermark(walk.symbol, now)
