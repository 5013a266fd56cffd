"""A serving replica's follower of the shared store's update log.

:class:`UpdateReader` is what follows the store (Redis) in a serving
process. It is typed against :class:`~candlewire.store.base.UpdateLog`, what
it calls on the store, and keeps the replica's caches
(:mod:`candlewire.store.cached`) current. It
waits on the update streams of every served series (``XREAD BLOCK``), then
reads what is new (one script per symbol, which sees that symbol's streams
at one instant) and publishes it to the local hub in sequence order per
symbol, tracking the last entry id read per symbol. So the hub of every
replica sees each symbol's updates in the same order, and a resume token
(one position per symbol) from one replica is valid on any other. The same
wait returns new quotes from the price streams, which keep
:class:`QuoteCache` current. :class:`CandleCache` holds the newest candles of
each series: seeded by the script that gives the reader its start position,
then changed by every update the reader reads (with each series' stored
count and oldest open time, read by the same script), so after each read it
is what Redis holds at the reader's position. On a Redis Cluster one ``XREAD`` may only name
streams of one slot, so the reader runs one follower per symbol there
(one blocking connection each); on one Redis a single follower waits on all.

:class:`TradeReader` does the same for trades: it waits on the trade streams
of the served symbols and publishes what is new to the local trade hub, in
sequence order per symbol, so trade resume tokens are valid on every replica.

When the log positions the reader holds are gone (Redis flushed or restarted
empty, or the reader fell behind the retained log), the subscriptions of the
hub are ended (their clients resume with their tokens, which the store then
refuses as expired) and the reader starts again from the newest position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from candlewire.domain import SeriesKey
from candlewire.errors import DataExpired, StoreUnavailable
from candlewire.hub import Hub
from candlewire.retry import Backoff, Retry
from candlewire.store.base import TradeFeed, TradeUpdate, Update, UpdateLog
from candlewire.store.cached import CandleCache, QuoteCache
from candlewire.tasks import checkpoint

__all__ = ["TradeReader", "UpdateReader"]

log = logging.getLogger(__name__)

_BLOCK = 1.0  # seconds one XREAD waits before the reader checks in again
_BACKOFF_CAP = 2.0


class _Replaced(Exception):
    """A follower saw the dataset change (its siblings stop too)."""


class UpdateReader:
    """Follows the update and price streams of ``series`` into ``hub`` and ``cache``."""

    def __init__(
        self,
        store: UpdateLog,
        hub: Hub[Update],
        series: Sequence[SeriesKey],
        cache: QuoteCache,
        candles: CandleCache | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._series = list(series)
        self._symbols = sorted({key.symbol for key in series})
        self._cache = cache
        self._candles = candles
        self.position: dict[str, int] = {}
        """Per symbol, the newest sequence number published."""
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        retry = Retry(Backoff(initial=0.05, maximum=_BACKOFF_CAP), name="following the store")
        epoch: bytes | None = None
        while True:
            checkpoint()
            try:
                if epoch is None or self._store.epoch != epoch:
                    if epoch is not None:
                        log.warning("the Redis dataset was replaced; streams restart")
                        self._hub.end_all(
                            DataExpired("the store's data was replaced; start afresh")
                        )
                    if self._candles is not None:
                        self._candles.suspend()
                    await self._store.ping()
                    epoch = self._store.epoch
                    self.position = await self._start_position(epoch)
                    # The reader starts (again) here; on a replaced dataset the
                    # old published positions mean nothing (its streams ended).
                    self._hub.published_seq.update(self.position)
                prices = await self._store.price_positions(self._symbols)
                for quote in await self._store.get_quotes(self._symbols):
                    if quote is not None:
                        self._cache.put(quote)
                self._cache.connected = True
                retry.connected()  # logs the end of an outage
                await self._follow_all(prices, epoch)
            except StoreUnavailable as error:
                self._cache.connected = False
                if self._candles is not None:
                    self._candles.suspend()
                self.caught_up.clear()
                await retry.wait(error)
                with contextlib.suppress(StoreUnavailable):
                    await self._store.ping()  # reloads the epoch
            except DataExpired as error:
                log.warning("updates were trimmed before this replica read them: %s", error)
                if self._candles is not None:
                    self._candles.suspend()
                # Every stream gets the same error: it names no series, since
                # ``error`` speaks of one series, which most streams did not request.
                self._hub.end_all(
                    DataExpired("the store no longer holds this stream's position; start afresh")
                )
                epoch = None

    async def _start_position(self, epoch: bytes) -> dict[str, int]:
        """The position to follow from: the newest, with the candle cache
        seeded from the store as it is at that position (one script per
        symbol reads both)."""
        candles = self._candles
        if candles is None:
            return await self._store.head(self._symbols)
        snapshot = await self._store.snapshot(
            self._series, history=candles.size, start=None, closed_only=False
        )
        candles.seed(epoch, self._series, snapshot.slices)
        return dict(snapshot.position)

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
        store, hub, candles = self._store, self._hub, self._candles
        symbols = sorted({key.symbol for key in series} | set(prices))
        position = self.position
        while True:
            checkpoint()
            if candles is None:
                updates = await store.read_updates(series, after=position)
            else:
                updates, bounds = await store.follow_updates(series, after=position)
            if store.epoch != epoch:
                break
            if candles is not None:
                # With the position, before anything else runs: the cache
                # stays the store as it is at the reader's position.
                candles.apply(updates)
                candles.bound(bounds)
            if updates:
                for update in updates:
                    position[update.series.symbol] = update.seq
                hub.publish(updates)
                continue
            if candles is not None:
                candles.resume(symbols)
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


class TradeReader:
    """Follows the trade streams of ``symbols`` into ``hub``."""

    def __init__(self, store: TradeFeed, hub: Hub[TradeUpdate], symbols: Sequence[str]) -> None:
        self._store = store
        self._hub = hub
        self._symbols = sorted(set(symbols))
        self.position: dict[str, int] = {}
        """Per symbol, the newest trade sequence number published."""

    async def run(self) -> None:
        retry = Retry(Backoff(initial=0.05, maximum=_BACKOFF_CAP), name="following the trades")
        while True:
            checkpoint()
            try:
                epoch = self._store.epoch
                self.position = await self._store.trade_heads(self._symbols)
                self._hub.published_seq.update(self.position)
                retry.connected()
                if self._store.cluster:
                    async with asyncio.TaskGroup() as tasks:
                        for symbol in self._symbols:
                            tasks.create_task(self._follow([symbol], epoch))
                else:
                    await self._follow(self._symbols, epoch)
                log.warning("the Redis dataset was replaced; trade streams restart")
                self._hub.end_all(DataExpired("the store's data was replaced; start afresh"))
            except* StoreUnavailable as group:
                await retry.wait(group.exceptions[0])
            except* DataExpired as group:
                log.warning("trades were trimmed before this replica read them: %s", group)
                self._hub.end_all(DataExpired(str(group.exceptions[0])))

    async def _follow(self, symbols: Sequence[str], epoch: bytes) -> None:
        """Publish the trades of ``symbols`` until the dataset changes."""
        store, hub, position = self._store, self._hub, self.position
        while store.epoch == epoch:
            checkpoint()
            trades = await store.read_trades(symbols, position)
            if trades:
                for trade in trades:
                    position[trade.series.symbol] = trade.seq
                hub.publish(trades)
                continue
            await store.wait_for_trades(symbols, position, _BLOCK)
            heads = await store.trade_heads(symbols)
            if any(heads[s] < position.get(s, 0) for s in symbols):  # flushed
                return
