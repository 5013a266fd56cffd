"""Ingestion: feed events through aggregation into the store and the hub.

The :class:`Ingestor` is the feed's sink. Trades go through one pure
:class:`~candlewire.aggregate.SymbolAggregator` per symbol; the candle
versions it emits are written to the store (which numbers them) and then
published to the hub, in that order, so a subscriber that read the store
before a publish never misses it and never sees it twice.

Kline feeds bypass aggregation: the venue's candles are numbered here
(``revision``), exact duplicates are dropped, and a version older than the
one already seen (fewer trades, or forming after closed) is ignored, so
duplicated and reordered venue messages cannot move a candle backwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from candlewire.aggregate import AggregatorConfig, SymbolAggregator
from candlewire.domain import Candle, Quote, SeriesKey, Source, Trade
from candlewire.hub import Hub
from candlewire.store.base import Store

__all__ = ["Ingestor"]

log = logging.getLogger(__name__)


class Ingestor:
    """Implements :class:`~candlewire.feeds.base.FeedSink`."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        symbols: Iterable[str],
        config: AggregatorConfig,
        source: Source,
    ) -> None:
        self._store = store
        self._hub = hub
        self._aggregators = {s: SymbolAggregator(s, config, source) for s in symbols}
        self._write_lock = asyncio.Lock()
        self._venue: dict[SeriesKey, OrderedDict[int, Candle]] = {}
        self._quotes: dict[str, Quote] = {}
        self._last_trade: dict[str, Trade] = {}
        self.last_receive: float | None = None
        """Monotonic time of the last event from the feed."""
        self.trades_in = 0
        self.candles_out = 0

    @property
    def dropped_late(self) -> int:
        return sum(a.dropped_late for a in self._aggregators.values())

    def _touch(self) -> None:
        self.last_receive = time.monotonic()

    async def trades(self, trades: Sequence[Trade]) -> None:
        self._touch()
        by_symbol: dict[str, list[Trade]] = defaultdict(list)
        for trade in trades:
            by_symbol[trade.symbol].append(trade)
        candles: list[Candle] = []
        for symbol, batch in by_symbol.items():
            aggregator = self._aggregators.get(symbol)
            if aggregator is None:
                log.warning("trade for unconfigured symbol %s ignored", symbol)
                continue
            if len(batch) >= _THREAD_BATCH:
                # A backfill: aggregate in a worker thread so the event loop
                # keeps answering (health probes) meanwhile. Only this task
                # touches the aggregator, and it waits for the thread.
                candles.extend(await asyncio.to_thread(aggregator.add_trades, batch))
            else:
                candles.extend(aggregator.add_trades(batch))
            if aggregator.now is not None:
                self._hub.note_event_time(symbol, aggregator.now)
        self.trades_in += len(trades)
        await self._write(candles)
        await self._note_last_trades(trades)

    async def _note_last_trades(self, trades: Sequence[Trade]) -> None:
        """Keep each symbol's stored quote carrying the price of its last trade."""
        changed: dict[str, Quote] = {}
        for trade in trades:
            last = self._last_trade.get(trade.symbol)
            if last is not None and trade.time < last.time:
                continue
            self._last_trade[trade.symbol] = trade
            quote = self._quotes.get(trade.symbol)
            if quote is not None and quote.last != trade.price:
                changed[trade.symbol] = self._quotes[trade.symbol] = replace(
                    quote, last=trade.price
                )
        if changed:
            await self._store.put_quotes(list(changed.values()))

    async def quotes(self, quotes: Sequence[Quote]) -> None:
        self._touch()
        filled = []
        for quote in quotes:
            if quote.last is None and quote.symbol in self._last_trade:
                quote = replace(quote, last=self._last_trade[quote.symbol].price)
            self._quotes[quote.symbol] = quote
            filled.append(quote)
            self._hub.note_event_time(quote.symbol, quote.time)
        await self._store.put_quotes(filled)

    async def watermark(self, symbol: str, time: int) -> None:
        self._touch()
        aggregator = self._aggregators.get(symbol)
        if aggregator is None:
            return
        await self._write(aggregator.advance(time))
        self._hub.note_event_time(symbol, time)

    async def candles(self, candles: Sequence[Candle]) -> None:
        self._touch()
        fresh: list[Candle] = []
        for candle in candles:
            recent = self._venue.setdefault(candle.series, OrderedDict())
            seen = recent.get(candle.open_time)
            if seen is None:
                candle = replace(candle, revision=0)
            elif _older_or_same(candle, seen):
                continue
            else:
                candle = replace(candle, revision=seen.revision + 1)
            recent[candle.open_time] = candle
            recent.move_to_end(candle.open_time)
            while len(recent) > _VENUE_MEMORY:
                recent.popitem(last=False)
            fresh.append(candle)
        await self._write(fresh)

    async def _write(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return
        # Publish in the order the store numbered the updates, even when a
        # feed calls the sink from several tasks and the store write awaits:
        # streams rely on sequence order to skip what they already sent.
        async with self._write_lock:
            updates = await self._store.write_candles(candles)
            self.candles_out += len(updates)
            self._hub.publish(updates)


_THREAD_BATCH = 2000  # trades per symbol from which aggregation leaves the event loop
_VENUE_MEMORY = 64  # recent candles remembered per series to number venue versions


def _older_or_same(candle: Candle, seen: Candle) -> bool:
    if seen.closed and not candle.closed:
        return True
    if candle.trade_count < seen.trade_count:
        return True
    # The same candle from REST and from the stream differs only in source.
    return replace(candle, revision=seen.revision, source=seen.source) == seen
