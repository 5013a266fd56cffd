"""``candlewire backfill`` against the local Binance (REST only): complete,
resumable, within the request-weight budget through 429 and 418 answers, and
rolled-up intervals equal to the venue's own klines."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict

from candlewire.codec import candle_frame
from candlewire.domain import NANOS_PER_MILLI, Interval, SeriesKey, Source
from candlewire.feeds.binance.http import BinanceHttp, RateLimiter
from candlewire.feeds.binance.schemas import decode_klines, row_candle
from candlewire.history import HistoryStore
from candlewire.history.load import Progress, backfill
from tests.binance.exchange import Exchange, SymbolSpec, make_tape

T0 = 1_767_225_600_000  # ms
HOUR = 3_600_000
DAY = 24 * HOUR
SYMBOLS = ("BTCUSDT", "ETHUSDT")
DERIVED = (Interval.H1, Interval.H4, Interval.D1)


class Clock:
    """Wall-clock seconds where long waits (the weight budget's next minute)
    pass at once and short ones (Retry-After of 1 s) really pass."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        if seconds > 5:
            self.offset += seconds
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)


class Recording(RateLimiter):
    def __init__(self, clock: Clock, **kwargs: float) -> None:
        super().__init__(clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]
        self.clock = clock
        self.sent: list[tuple[float, int]] = []

    async def acquire(self, weight: int) -> None:
        await super().acquire(weight)
        self.sent.append((self.clock(), weight))


def _truth(exchange: Exchange, symbol: str, interval: Interval, until: int) -> list[bytes]:
    rows = decode_klines([k.row() for k in exchange.truth(symbol, interval) if k.closed])
    return [
        candle_frame(row_candle(symbol, interval, r, closed=True, source=Source.BACKFILL,
                                unit=NANOS_PER_MILLI))
        for r in rows if r.closeTime < until
    ]  # fmt: skip


async def _stored(history: HistoryStore, symbol: str, interval: Interval) -> list[bytes]:
    found = await history.get_candles(SeriesKey(symbol, interval), start=0, end=None, limit=10**6)
    return list(found.frames)


async def test_backfill_resumes_completes_and_keeps_the_budget(history: HistoryStore) -> None:
    clock = Clock()
    tape = make_tape(
        SYMBOLS, T0, T0 + DAY + 2 * HOUR, quiet=(T0 + 5 * HOUR, T0 + 5 * HOUR + 600_000)
    )
    specs = [SymbolSpec("BTCUSDT", "BTC", "USDT"), SymbolSpec("ETHUSDT", "ETH", "USDT")]
    async with Exchange(tape, specs, now=T0 + DAY + HOUR, weight_limit=60, clock=clock) as exchange:
        limiter = Recording(clock, share=0.5)
        http = BinanceHttp(exchange.rest_url, limiter=limiter, klines_limit=100)
        try:
            half = (T0 + 12 * HOUR) * NANOS_PER_MILLI
            progress = Progress("backfill")
            first = await backfill(history, http, SYMBOLS, (Interval.M1,), T0 * NANOS_PER_MILLI,
                                   half, derived=DERIVED, progress=progress)  # fmt: skip
            assert first.requests == 2 * math.ceil(720 / 100)
            assert progress.done == progress.total == 2 * (720 + 12 + 3)
            for symbol in SYMBOLS:
                assert await _stored(history, symbol, Interval.M1) == _truth(
                    exchange, symbol, Interval.M1, T0 + 12 * HOUR
                )
            # The second run meets a 429 and a 418 on its way.
            exchange.fail_next(429, "1")
            exchange.fail_next(418, "1")
            before = len(exchange.requests)
            end = (T0 + DAY) * NANOS_PER_MILLI
            second = await backfill(history, http, SYMBOLS, (Interval.M1,), T0 * NANOS_PER_MILLI,
                                    end, derived=DERIVED)  # fmt: skip
            later = [r for r in exchange.requests[before:] if r.path == "/api/v3/klines"]
            assert [r.status for r in later[:2]] == [429, 418]
            assert all(int(r.params["startTime"]) >= T0 + 12 * HOUR for r in later)
            assert second.requests == 2 * math.ceil(720 / 100)  # only what was missing
            banned = later[1]
            assert all(r.at >= exchange.banned_until for r in later[2:])  # nothing during the ban
            assert banned.at < exchange.banned_until
            for symbol in SYMBOLS:
                for interval in (Interval.M1, *DERIVED):
                    want = _truth(exchange, symbol, interval, T0 + DAY)
                    assert want, interval
                    assert await _stored(history, symbol, interval) == want, (symbol, interval)
            third = await backfill(history, http, SYMBOLS, (Interval.M1,), T0 * NANOS_PER_MILLI,
                                   end, derived=DERIVED)  # fmt: skip
            assert third.requests == 0 and third.candles == 0
        finally:
            await http.aclose()
    # The weight this client used per minute never exceeded its share of the limit.
    per_minute: dict[int, int] = defaultdict(int)
    for at, weight in limiter.sent:
        per_minute[int(at // 60)] += weight
    assert limiter.budget == 30
    assert max(per_minute.values()) <= limiter.budget
    assert len(per_minute) >= 3  # the budget made it wait for later minutes
