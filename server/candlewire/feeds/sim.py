"""The simulated feed: a market that is a pure function of its seed and the time.

Everything it produces is marked ``Source.SIMULATED``. The mid price of a
symbol at time ``t`` is ``price * exp(L(t))``, where ``L`` sums octaves of
value noise (random values on grids of 1 s, 10 s, 1 min ... 1 week, joined by
straight lines, each scaled like a random walk over its grid step), quantised
to the symbol's precision. The values come from a hash of (seed, symbol,
octave, grid index), so the price at an instant never depends on when the
simulator started: a restarted or rebuilt service shows the same market.

Ticks fall on fixed grids aligned to the Unix epoch: live ticks every
``1 / rate`` seconds, history (``history_minutes`` backfilled at start-up)
every 10 s. Each tick is one trade (at the bid or the ask, its side and size
also drawn from the hash of its time) and a new quote. So a tick at a given
time has the same price, size and side in every process and every rebuild;
history rebuilt after a data loss has the same prices at the same times as
before, with the candles that the lost data had built from live ticks
rebuilt from the 10-second history grid. Event times come from the
simulator's clock, which is the only venue clock there is.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from candlewire.domain import NANOS_PER_SECOND, Instrument, Quote, Side, Source, Trade
from candlewire.feeds.base import FeedSink
from candlewire.tasks import checkpoint

__all__ = ["HISTORY_STEP", "SimFeed", "SimProfile"]

HISTORY_STEP = 10 * NANOS_PER_SECOND
"""Nanoseconds between two backfilled ticks."""

_MASK = (1 << 64) - 1
_OCTAVES = tuple(s * NANOS_PER_SECOND for s in (1, 10, 60, 600, 3_600, 21_600, 86_400, 604_800))
_SALT_SIZE = 0x5A17_0000_0000_0001
_SALT_SIDE = 0x5A17_0000_0000_0002
_MAX_CATCH_UP = 60.0
"""Seconds of missed live ticks emitted after a stall (older ones are skipped)."""


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of a 64-bit key."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _unit(key: int) -> float:
    """A uniform number in (0, 1) from a key."""
    return ((_mix(key) >> 11) + 0.5) / (1 << 53)


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


class _Octave:
    """Value noise on one grid: the two grid values around the last time asked."""

    __slots__ = ("amplitude", "base", "index", "left", "right", "step")

    def __init__(self, base: int, step: int, amplitude: float) -> None:
        self.base = base
        self.step = step
        self.amplitude = amplitude
        self.index = -1
        self.left = self.right = 0.0

    def _value(self, index: int) -> float:
        # Uniform on [-sqrt(3), sqrt(3)): unit variance.
        return (2.0 * _unit(self.base ^ (index & _MASK)) - 1.0) * 1.7320508075688772

    def at(self, t: int) -> float:
        step = self.step
        index = t // step
        if index != self.index:
            self.left = self.right if index == self.index + 1 else self._value(index)
            self.right = self._value(index + 1)
            self.index = index
        left = self.left
        return self.amplitude * (left + (self.right - left) * ((t - index * step) / step))


class _Path:
    """The market of one symbol: every value a function of (seed, symbol, time)."""

    def __init__(self, symbol: str, profile: SimProfile, seed: int) -> None:
        self.symbol = symbol
        self.profile = profile
        self.key = _mix((seed & _MASK) ^ (zlib.crc32(symbol.encode()) << 32))
        self.octaves = [
            _Octave(
                _mix(self.key ^ (n + 1)),
                step,
                profile.volatility * math.sqrt(step / NANOS_PER_SECOND) / 2,
            )
            for n, step in enumerate(_OCTAVES)
        ]
        self.tick = Decimal(1).scaleb(-profile.price_precision)
        self.lot = Decimal(1).scaleb(-profile.quantity_precision)
        self.depth = Decimal(repr(profile.size * 5)).quantize(self.lot)

    def mid(self, t: int) -> float:
        level = 0.0
        for octave in self.octaves:
            level += octave.at(t)
        return self.profile.price * math.exp(level)

    def tick_at(self, t: int, receive_time: int) -> tuple[Trade, Quote]:
        """The trade and quote of the tick at time ``t`` (nanoseconds)."""
        p = self.profile
        half = self.tick * p.spread_ticks / 2
        mid = Decimal(repr(self.mid(t))).quantize(self.tick)
        bid = (mid - half).quantize(self.tick, rounding="ROUND_FLOOR")
        ask = bid + self.tick * p.spread_ticks
        # A log-normal size (Box-Muller from two uniforms of the tick's time)
        # and the side, all from two hashes of the time.
        u1 = _unit(self.key ^ _mix(t ^ _SALT_SIZE))
        bits = _mix(self.key ^ _mix(t ^ _SALT_SIDE))
        u2 = (bits >> 11) / (1 << 53)
        gauss = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        size = max(Decimal(repr(p.size * math.exp(0.8 * gauss))).quantize(self.lot), self.lot)
        price = ask if bits & 1 else bid
        # A trade at the ask was bought by its aggressor, one at the bid sold.
        side = Side.BUY if bits & 1 else Side.SELL
        trade = Trade(self.symbol, t, price, size, Source.SIMULATED, side)
        quote = Quote(
            self.symbol,
            t,
            bid,
            ask,
            self.depth,
            self.depth,
            Source.SIMULATED,
            receive_time,
            last=price,
        )
        return trade, quote


class SimFeed:
    """Implements :class:`~candlewire.feeds.base.Feed` with a simulated market."""

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
        self._paths = [_Path(s, _profile(s), seed) for s in symbols]
        self._period = max(1, round(NANOS_PER_SECOND / rate))
        self._history_minutes = history_minutes
        self._watermark_interval = watermark_interval
        self._clock = clock

    async def instruments(self) -> Mapping[str, Instrument]:
        return {
            path.symbol: Instrument(
                path.symbol,
                path.profile.base,
                path.profile.quote,
                path.profile.price_precision,
                path.profile.quantity_precision,
                Source.SIMULATED,
            )
            for path in self._paths
        }

    async def backfill(self, sink: FeedSink) -> None:
        if not self._history_minutes:
            return
        end = self._clock()
        start = end - self._history_minutes * 60 * NANOS_PER_SECOND
        first = start - start % HISTORY_STEP
        for path in self._paths:
            ticks = [path.tick_at(t, end) for t in range(first, end, HISTORY_STEP)]
            await sink.trades([trade for trade, _ in ticks])
            if ticks:
                await sink.quotes([replace(ticks[-1][1], receive_time=self._clock())])
            await sink.watermark(path.symbol, end)

    async def run(self, sink: FeedSink) -> None:
        """Live ticks on the ``1 / rate`` grid, from the clock's time on."""
        period = self._period
        catch_up = int(_MAX_CATCH_UP * NANOS_PER_SECOND)
        loop = asyncio.get_running_loop()
        last_watermark = 0.0
        done = self._clock() // period * period  # ticks up to here belong to history
        wait = min(period / NANOS_PER_SECOND, self._watermark_interval)
        while True:
            checkpoint()
            await asyncio.sleep(wait)
            now = self._clock()
            due = now // period * period
            if due > done:
                first = max(done + period, due - catch_up)
                times = range(first - first % period, due + 1, period)
                trades: list[Trade] = []
                quotes: list[Quote] = []
                for path in self._paths:
                    for t in times:
                        trade, quote = path.tick_at(t, now)
                        trades.append(trade)
                        quotes.append(quote)
                done = due
                await sink.trades(trades)
                await sink.quotes(quotes)
            if loop.time() - last_watermark >= self._watermark_interval:
                last_watermark = loop.time()
                for path in self._paths:
                    await sink.watermark(path.symbol, now)
