"""A serving replica's caches of a shared store, and the store it reads through.

:class:`QuoteCache` holds the latest quote of each symbol and
:class:`CandleCache` the newest candles of each served series; the replica's
follower (:class:`~candlewire.flow.follow.UpdateReader`) keeps both current
from the store's update log. :class:`CachedStore` is the
:class:`~candlewire.store.base.Store` the API of a replica reads: quotes from
the quote cache (no round trip), candles from the candle cache when it holds
all of the answer, everything else from the store it wraps.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence

from candlewire.codec import FrameRun
from candlewire.domain import Candle, Quote, SeriesKey, Trade
from candlewire.errors import StoreUnavailable
from candlewire.store.base import (
    Bounds,
    CandleSlice,
    Position,
    Snapshot,
    Store,
    TradeSlice,
    TradeUpdate,
    Update,
)

__all__ = ["CachedStore", "CandleCache", "QuoteCache"]


class QuoteCache:
    """The latest quote per symbol, each dropped ``ttl`` seconds after it
    arrived (as Redis expires it)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._quotes: dict[str, tuple[Quote, float]] = {}
        self.connected = False
        self.hits = 0
        """Reads answered from the cache (the reader follows the store)."""
        self.misses = 0
        """Reads that went to the store (the reader is not following it)."""
        """True while the reader follows the price streams."""

    def put(self, quote: Quote) -> None:
        self._quotes[quote.symbol] = (quote, time.monotonic() + self._ttl)

    def get(self, symbol: str) -> Quote | None:
        found = self._quotes.get(symbol)
        if found is None:
            return None
        if found[1] < time.monotonic():
            del self._quotes[symbol]
            return None
        return found[0]

    def has(self, symbols: Sequence[str]) -> bool:
        return all(self.get(s) is not None for s in symbols)


class _Recent:
    """The newest candles of one series: open times ascending, frame lengths,
    and the frames back to back in one buffer (no object per candle)."""

    __slots__ = ("buf", "complete", "lengths", "times")

    def __init__(self) -> None:
        self.times = array("q")
        self.lengths = array("I")
        self.buf = bytearray()
        self.complete = False
        """True when these are all the candles of the series in the store."""

    def offset(self, index: int) -> int:
        lengths = self.lengths
        if index > len(lengths) // 2:
            return len(self.buf) - sum(lengths[index:])
        return sum(lengths[:index])

    def drop_oldest(self, count: int) -> None:
        del self.buf[: sum(self.lengths[:count])]
        del self.times[:count], self.lengths[:count]


class CandleCache:
    """The newest ``size`` candles of each served series, as the store holds them.

    Kept by :class:`UpdateReader`: seeded from a snapshot of the store at the
    position the reader then follows from, and changed by every update it
    reads, in sequence order, so after each read it equals the store at the
    reader's position: it holds every stored candle from its oldest open time
    on, in its stored version, and knows whether that is the whole series.
    It answers only while the reader follows the store (``live``) and for
    the dataset it was seeded from.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self.size = size
        self._series: dict[SeriesKey, _Recent] = {}
        self._epoch: bytes | None = None
        self._live: set[str] = set()
        self.answered = 0
        """How many reads the cache answered."""
        self.missed = 0
        """How many reads of followed series it could not answer (they went to the store)."""

    def seed(
        self, epoch: bytes, series: Sequence[SeriesKey], slices: Sequence[CandleSlice]
    ) -> None:
        """Start over from the newest ``size`` candles of each series (at
        most ``size`` each, as :meth:`Store.snapshot` returns them)."""
        self._live.clear()
        self._epoch = epoch
        self._series = {}
        for key, found in zip(series, slices, strict=True):
            recent = self._series[key] = _Recent()
            frames = found.frames
            recent.times = array("q", found.open_times)
            recent.lengths = array("I", [len(frame) for frame in frames])
            data = frames.data if isinstance(frames, FrameRun) else b"".join(frames)
            recent.buf = bytearray(data)
            recent.complete = len(found) < self.size  # else known after the next read

    def apply(self, updates: Iterable[Update]) -> None:
        """Apply updates read from the store's log (in its sequence order per symbol)."""
        size = self.size
        for update in updates:
            recent = self._series.get(update.series)
            if recent is None:
                continue
            times, lengths, buf = recent.times, recent.lengths, recent.buf
            open_time, frame = update.open_time, update.frame
            n = len(times)
            if n and times[n - 1] == open_time:  # the forming candle: the usual update
                i, exists = n - 1, True
            elif not n or times[n - 1] < open_time:
                i, exists = n, False
            else:
                i = bisect_left(times, open_time)
                exists = times[i] == open_time
            if exists:
                # A logged version is always newer than the stored one it replaces.
                start = recent.offset(i)
                buf[start : start + lengths[i]] = frame
                lengths[i] = len(frame)
                continue
            if i == 0 and not recent.complete:
                continue  # older than the cached range, which says nothing below itself
            if i == n:
                buf += frame
            else:
                start = recent.offset(i)
                buf[start:start] = frame
            times.insert(i, open_time)
            lengths.insert(i, len(frame))
            if n + 1 > size:
                recent.drop_oldest(n + 1 - size)
                recent.complete = False

    def bound(self, bounds: Mapping[SeriesKey, Bounds]) -> None:
        """Drop what the store evicted and learn whether each series is
        complete, from the stored count and oldest open time of each series at
        the position of the updates last applied."""
        for key, (count, oldest) in bounds.items():
            recent = self._series.get(key)
            if recent is None:
                continue
            times = recent.times
            if oldest is None:
                recent.drop_oldest(len(times))
            elif times and times[0] < oldest:
                recent.drop_oldest(bisect_left(times, oldest))
            recent.complete = len(times) == count

    def resume(self, symbols: Iterable[str]) -> None:
        """Answer for ``symbols`` (their reader caught up with the store)."""
        self._live.update(symbols)

    def suspend(self) -> None:
        """Answer nothing until :meth:`resume` (the reader stopped following)."""
        self._live.clear()

    def answers(self, symbol: str) -> bool:
        """Whether the reader follows ``symbol`` (the cache may answer for it)."""
        return symbol in self._live

    def get(
        self, series: SeriesKey, epoch: bytes, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice | None:
        """What :meth:`Store.get_candles` returns, or None when the cache
        cannot prove it holds all of it (or is not current)."""
        if series.symbol not in self._live or epoch != self._epoch:
            return None
        recent = self._series.get(series)
        if recent is None:
            return None
        if limit <= 0:
            self.answered += 1
            return CandleSlice((), ())
        times = recent.times
        n = len(times)
        hi = n if end is None else bisect_left(times, end)
        if start is not None:
            if not recent.complete and (not n or start < times[0]):
                return None
            lo = bisect_left(times, start)
            hi = min(hi, lo + limit)
        else:
            lo = hi - limit
            if lo < 0:
                if not recent.complete:
                    return None
                lo = 0
        self.answered += 1
        if lo >= hi:
            return CandleSlice((), ())
        first = recent.offset(lo)
        lengths = recent.lengths[lo:hi]
        with memoryview(recent.buf) as view:
            data = view[first : first + sum(lengths)].tobytes()
        return CandleSlice(times[lo:hi], FrameRun(data, lengths))


class CachedStore:
    """The store as a serving replica uses it: quotes come from the local
    cache (no Redis round trip), and candles from the candle cache when it
    holds all of the answer; everything else goes to Redis."""

    def __init__(self, store: Store, cache: QuoteCache, candles: CandleCache | None = None) -> None:
        self._store = store
        self._cache = cache
        self._candles = candles

    @property
    def epoch(self) -> bytes:
        return self._store.epoch

    async def ping(self) -> None:
        await self._store.ping()

    async def close(self) -> None:
        await self._store.close()

    async def put_quotes(self, quotes: Sequence[Quote]) -> None:
        await self._store.put_quotes(quotes)

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        cache = self._cache
        if cache.connected:
            cache.hits += 1
            return [cache.get(s) for s in symbols]
        cache.misses += 1
        try:
            return await self._store.get_quotes(symbols)
        except StoreUnavailable:
            if cache.has(symbols):  # still within their TTL: serve them while Redis is away
                return [cache.get(s) for s in symbols]
            raise

    async def recent_ticks(self, symbol: str, limit: int) -> list[Quote]:
        return await self._store.recent_ticks(symbol, limit)

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        return await self._store.write_candles(candles)

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        candles = self._candles
        if candles is not None and candles.answers(series.symbol):
            found = candles.get(series, self._store.epoch, start=start, end=end, limit=limit)
            if found is not None:
                return found
            candles.missed += 1
        return await self._store.get_candles(series, start=start, end=end, limit=limit)

    async def head(self, symbols: Sequence[str]) -> dict[str, int]:
        return await self._store.head(symbols)

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: Position | None = None,
    ) -> Snapshot:
        return await self._store.snapshot(
            series, history=history, start=start, closed_only=closed_only, at=at
        )

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        return await self._store.read_updates(series, after)

    # Trades are read from the store itself (no replica cache).

    async def write_trades(self, trades: Sequence[Trade]) -> list[TradeUpdate]:
        return await self._store.write_trades(trades)

    async def trade_heads(self, symbols: Sequence[str]) -> dict[str, int]:
        return await self._store.trade_heads(symbols)

    async def get_trades(
        self,
        symbol: str,
        *,
        start: int | None = None,
        end: int | None = None,
        after: int = 0,
        upto: int | None = None,
        limit: int,
        latest: bool = False,
    ) -> TradeSlice:
        return await self._store.get_trades(
            symbol, start=start, end=end, after=after, upto=upto, limit=limit, latest=latest
        )

    async def read_trades(self, symbols: Sequence[str], after: Position) -> list[TradeUpdate]:
        return await self._store.read_trades(symbols, after)
