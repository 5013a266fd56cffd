"""A serving process's view of a shared Redis: one reader, a local price cache.

:class:`UpdateReader` is the one task per process that follows Redis: it
waits on the update streams of every served series (``XREAD BLOCK``), then
reads what is new in one script call, which sees every stream at one instant,
and publishes it to the local hub in sequence order. So the hub of every
replica sees the same updates in the same order, and a resume token from one
replica is valid on any other. The same wait returns new quotes from the
price streams, which keep :class:`QuoteCache` current.

When the log positions the reader holds are gone (Redis flushed or restarted
empty, or the reader fell behind the retained log), the subscriptions of the
hub are ended (their clients resume with their tokens, which the store then
refuses as expired) and the reader starts again from the newest position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from candlewire.domain import Candle, Quote, SeriesKey
from candlewire.errors import DataExpired, ShuttingDown, StoreUnavailable
from candlewire.hub import Hub
from candlewire.store.base import CandleSlice, Snapshot, Update

if TYPE_CHECKING:  # imported at run time only by processes that use Redis
    from candlewire.store.redis import RedisStore

__all__ = ["CachedStore", "QuoteCache", "UpdateReader"]

log = logging.getLogger(__name__)

_BLOCK = 1.0  # seconds one XREAD waits before the reader checks in again
_BACKOFF_CAP = 2.0


class QuoteCache:
    """The latest quote per symbol, each dropped ``ttl`` seconds after it
    arrived (as Redis expires it)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._quotes: dict[str, tuple[Quote, float]] = {}
        self.connected = False
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


def _end_subscriptions(hub: Hub, error: DataExpired | ShuttingDown) -> None:
    # Ends the streams of this hub (their clients resume with their tokens).
    for subscription in tuple(hub._subscriptions):
        subscription._fail(error)
        hub._drop(subscription)


class UpdateReader:
    """Follows the update and price streams of ``series`` into ``hub`` and ``cache``."""

    def __init__(
        self, store: RedisStore, hub: Hub, series: Sequence[SeriesKey], cache: QuoteCache
    ) -> None:
        self._store = store
        self._hub = hub
        self._series = list(series)
        self._symbols = sorted({key.symbol for key in series})
        self._cache = cache
        self.position = 0
        """The newest sequence number published."""
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        delay = 0.05
        epoch: bytes | None = None
        while True:
            try:
                if epoch is None or self._store.epoch != epoch:
                    if epoch is not None:
                        log.warning("the Redis dataset was replaced; streams restart")
                        _end_subscriptions(
                            self._hub, DataExpired("the store's data was replaced; start afresh")
                        )
                    await self._store.ping()
                    epoch = self._store.epoch
                    self.position = await self._store.head()
                    self._hub.published_seq = max(self._hub.published_seq, self.position)
                prices = await self._store.price_positions(self._symbols)
                for quote in await self._store.get_quotes(self._symbols):
                    if quote is not None:
                        self._cache.put(quote)
                self._cache.connected = True
                if delay > 0.05:
                    log.warning("following Redis again from position %d", self.position)
                delay = 0.05
                await self._follow(prices, epoch)
            except StoreUnavailable as error:
                if self._cache.connected or delay == 0.05:
                    log.warning("cannot follow Redis (%s); retrying", error)
                self._cache.connected = False
                self.caught_up.clear()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _BACKOFF_CAP)
                with contextlib.suppress(StoreUnavailable):
                    await self._store.ping()  # reloads the epoch
            except DataExpired as error:
                log.warning("updates were trimmed before this replica read them: %s", error)
                _end_subscriptions(self._hub, DataExpired(str(error)))
                epoch = None

    async def _follow(self, prices: dict[str, bytes], epoch: bytes) -> None:
        store, hub = self._store, self._hub
        while True:
            updates = await store.read_updates(self._series, after=self.position)
            if store.epoch != epoch:
                return
            if updates:
                self.position = updates[-1].seq
                hub.publish(updates)
                continue
            self.caught_up.set()
            for symbol, quote in await store.wait_for_updates(
                self._series, self.position, prices, _BLOCK
            ):
                self._cache.put(quote)
                hub.note_event_time(symbol, quote.time)
            if await store.head() < self.position:  # flushed: a new dataset
                await store.ping()
                return


class CachedStore:
    """The store as a serving replica uses it: quotes come from the local
    cache (no Redis round trip); everything else goes to Redis."""

    def __init__(self, store: RedisStore, cache: QuoteCache) -> None:
        self._store = store
        self._cache = cache

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
            return [cache.get(s) for s in symbols]
        try:
            return await self._store.get_quotes(symbols)
        except StoreUnavailable:
            if cache.has(symbols):  # still within their TTL: serve them while Redis is away
                return [cache.get(s) for s in symbols]
            raise

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        return await self._store.write_candles(candles)

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        return await self._store.get_candles(series, start=start, end=end, limit=limit)

    async def head(self) -> int:
        return await self._store.head()

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: int | None = None,
    ) -> Snapshot:
        return await self._store.snapshot(
            series, history=history, start=start, closed_only=closed_only, at=at
        )

    async def read_updates(self, series: Sequence[SeriesKey], after: int) -> list[Update]:
        return await self._store.read_updates(series, after)
