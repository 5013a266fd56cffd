"""A serving process's view of a shared Redis: one reader, a local price cache.

:class:`UpdateReader` is what follows Redis in a serving process: it
waits on the update streams of every served series (``XREAD BLOCK``), then
reads what is new (one script per symbol, which sees that symbol's streams
at one instant) and publishes it to the local hub in sequence order per
symbol, tracking the last entry id read per symbol. So the hub of every
replica sees each symbol's updates in the same order, and a resume token
(one position per symbol) from one replica is valid on any other. The same
wait returns new quotes from the price streams, which keep
:class:`QuoteCache` current. On a Redis Cluster one ``XREAD`` may only name
streams of one slot, so the reader runs one follower per symbol there
(one blocking connection each); on one Redis a single follower waits on all.

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
from candlewire.store.base import CandleSlice, Position, Snapshot, Update

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


class _Replaced(Exception):
    """A follower saw the dataset change (its siblings stop too)."""


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
        self.position: dict[str, int] = {}
        """Per symbol, the newest sequence number published."""
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
                    self.position = await self._store.head(self._symbols)
                    # The reader starts (again) here; on a replaced dataset the
                    # old published positions mean nothing (its streams ended).
                    self._hub.published_seq.update(self.position)
                prices = await self._store.price_positions(self._symbols)
                for quote in await self._store.get_quotes(self._symbols):
                    if quote is not None:
                        self._cache.put(quote)
                self._cache.connected = True
                if delay > 0.05:
                    log.warning("following Redis again from position %s", self.position)
                delay = 0.05
                await self._follow_all(prices, epoch)
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

    async def _follow_all(self, prices: dict[str, bytes], epoch: bytes) -> None:
        """Follow every series until the dataset changes (one follower, or
        one per symbol on a cluster); a follower's error ends them all."""
        if not self._store.cluster:
            await self._follow(self._series, prices, epoch, None)
            return
        caught_up: set[str] = set()
        try:
            async with asyncio.TaskGroup() as tasks:
                for symbol in self._symbols:
                    group = [key for key in self._series if key.symbol == symbol]
                    tasks.create_task(
                        self._follow(group, {symbol: prices[symbol]}, epoch, caught_up),
                        name=f"redis-reader-{symbol}",
                    )
        except BaseExceptionGroup as group:
            errors = group.exceptions
            known = [e for e in errors if isinstance(e, StoreUnavailable | DataExpired)]
            if known:
                raise known[0] from None
            if all(isinstance(e, _Replaced) for e in errors):
                return
            raise

    async def _follow(
        self,
        series: Sequence[SeriesKey],
        prices: dict[str, bytes],
        epoch: bytes,
        caught_up: set[str] | None,
    ) -> None:
        """Follow ``series`` (and the price streams of ``prices``); return
        (or raise :class:`_Replaced` when one of several) once the dataset
        changed. ``caught_up`` collects the symbols of followers that caught up."""
        store, hub = self._store, self._hub
        symbols = sorted({key.symbol for key in series} | set(prices))
        position = self.position
        while True:
            updates = await store.read_updates(series, after=position)
            if store.epoch != epoch:
                break
            if updates:
                for update in updates:
                    position[update.series.symbol] = update.seq
                hub.publish(updates)
                continue
            if caught_up is None:
                self.caught_up.set()
            else:
                caught_up.update(symbols)
                if len(caught_up) == len(self._symbols):
                    self.caught_up.set()
            for symbol, quote in await store.wait_for_updates(series, position, prices, _BLOCK):
                self._cache.put(quote)
                hub.note_event_time(symbol, quote.time)
            head = await store.head(symbols)
            if any(head[s] < position.get(s, 0) for s in symbols):  # flushed: a new dataset
                await store.ping()
                break
        if caught_up is not None:
            raise _Replaced


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
