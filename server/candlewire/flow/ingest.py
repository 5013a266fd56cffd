"""Ingestion: feed events through aggregation into the store and the hub.

The :class:`Ingestor` is the feed's sink. Every event first passes the
validation policy (:mod:`candlewire.validate`): what it refuses is dropped,
counted per symbol and reason, and logged (at most once per
``_LOG_EVERY`` seconds per symbol and reason). Accepted trades are stamped
with their receive time, written to the store's trade log and published to
the trade hub (a kline feed's trades, :meth:`Ingestor.record_trades`, only
that). Trades also go through one pure
:class:`~candlewire.aggregate.SymbolAggregator` per symbol; the candle
versions it emits are written to the store (which numbers them) and then
published to the hub, in that order, so a subscriber that read the store
before a publish never misses it and never sees it twice.

Kline feeds bypass aggregation: the venue's candles are numbered here
(``revision``), exact duplicates are dropped, and a version older than the
one already seen (fewer trades, or forming after closed) is ignored, so
duplicated and reordered venue messages cannot move a candle backwards.

While the store is unavailable the feed goes on: closed candles are kept in
a bounded buffer (the newest version of each; ``buffer_dropped`` counts what
did not fit) and written, oldest first, with the next write once the store is
back. Forming versions are not kept: the next one supersedes them.

An ingestor that starts on a store already holding data (a restart, or a
takeover from another ingestor) first calls :meth:`Ingestor.align`: candles
stored closed are final (its own versions only fill gaps), and the revisions
it writes for candles stored forming continue the stored ones (a version
equal to the stored one is not written again), so a hand-over neither repeats
nor rewrites a closed candle subscribers already received. For tick feeds
the forming candles are then completed from the trades the new ingestor saw
(its backfill and live data), not from its predecessor's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from candlewire.aggregate import AggregatorConfig, SymbolAggregator
from candlewire.codec import candle_frame, frame_to_candle
from candlewire.domain import Candle, Interval, Quote, SeriesKey, Source, Trade
from candlewire.errors import StoreUnavailable
from candlewire.hub import Hub
from candlewire.store.base import Store, TradeUpdate, Update
from candlewire.validate import Rejected, Rejections, ValidationConfig, Validator

__all__ = ["Ingestor"]

log = logging.getLogger(__name__)


class Ingestor:
    """Implements :class:`~candlewire.feeds.base.FeedSink`."""

    def __init__(
        self,
        store: Store,
        hub: Hub[Update],
        symbols: Iterable[str],
        config: AggregatorConfig,
        source: Source,
        *,
        publish: bool = True,
        buffer_size: int = 100_000,
        trade_hub: Hub[TradeUpdate] | None = None,
        validation: ValidationConfig | None = None,
        rejections: Rejections | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._trade_hub = trade_hub
        self.validator = Validator(
            validation or ValidationConfig(lateness=config.lateness),
            rejections,
            on_reject=self._rejected,
        )
        self._reject_logged: dict[tuple[str, int], tuple[float, int]] = {}
        self._trade_lock = asyncio.Lock()
        self.trades_lost = 0
        """Accepted trades not stored because the store was unavailable."""
        self._publish = publish
        self._intervals: tuple[Interval, ...] = config.intervals
        self._buffer: OrderedDict[tuple[SeriesKey, int], Candle] = OrderedDict()
        self._buffer_size = buffer_size
        self.buffer_dropped = 0
        """Closed candles dropped because the buffer was full during an outage."""
        self._floors: dict[tuple[SeriesKey, int], tuple[int, bytes]] = {}
        self._stored: dict[SeriesKey, frozenset[int]] = {}
        self._aggregators = {s: SymbolAggregator(s, config, source) for s in symbols}
        self._write_lock = asyncio.Lock()
        self._venue: dict[SeriesKey, OrderedDict[int, Candle]] = {}
        self._quotes: dict[str, Quote] = {}
        self._last_trade: dict[str, Trade] = {}
        self.last_receive: float | None = None
        """Monotonic time of the last event from the feed."""
        self.trades_in = 0
        self.candles_out = 0
        self.store_errors = 0
        """Writes that failed because the store was unavailable."""
        self._store_down = False

    @property
    def buffered(self) -> int:
        """Closed candles waiting for the store."""
        return len(self._buffer)

    async def align(self, retention: int) -> None:
        """Continue the data already stored (see the module docstring)."""
        for symbol in self._aggregators:
            for interval in self._intervals:
                key = SeriesKey(symbol, interval)
                found = await self._store.get_candles(key, start=None, end=None, limit=retention)
                if not len(found):
                    continue
                times = list(found.open_times)
                frames = found.frames
                closed: set[int] = set()
                for i in range(len(times)):
                    if i < len(times) - _ALIGNED:
                        closed.add(times[i])
                        continue
                    candle = frame_to_candle(frames[i])
                    if candle.closed:
                        closed.add(times[i])
                    else:
                        self._floors[(key, times[i])] = (candle.revision, frames[i])
                self._stored[key] = frozenset(closed)

    def _aligned(self, candles: Sequence[Candle]) -> list[Candle]:
        out: list[Candle] = []
        floors, stored = self._floors, self._stored
        for candle in candles:
            series = candle.series
            found = floors.get((series, candle.open_time))
            if found is not None:
                revision, frame = found
                if candle_frame(replace(candle, revision=revision)) == frame:
                    continue  # exactly what is stored
                candle = replace(candle, revision=revision + 1 + candle.revision)
            else:
                known = stored.get(series)
                if known is not None and candle.open_time in known:
                    continue  # closed before the hand-over: final, fill gaps only
            out.append(candle)
        return out

    @property
    def dropped_late(self) -> int:
        return sum(a.dropped_late for a in self._aggregators.values())

    def _touch(self) -> None:
        self.last_receive = time.monotonic()

    def _rejected(self, rejected: Rejected) -> None:
        """Log a refusal, at most once per ``_LOG_EVERY`` seconds per symbol and reason."""
        key = (rejected.symbol, rejected.reason.value)
        now = time.monotonic()
        last, skipped = self._reject_logged.get(key, (-_LOG_EVERY, 0))
        if now - last < _LOG_EVERY:
            self._reject_logged[key] = (last, skipped + 1)
            return
        self._reject_logged[key] = (now, 0)
        log.warning(
            "%s: input refused (%s): %s%s",
            rejected.symbol,
            rejected.reason.label,
            rejected.detail,
            f" ({skipped} more refused since the last report)" if skipped else "",
        )

    def _stamped(self, trades: Sequence[Trade]) -> list[Trade]:
        """The trades that pass validation, with their receive time."""
        now = time.time_ns()
        accepted = self.validator.trades(trades, now)
        return [t if t.receive_time else replace(t, receive_time=now) for t in accepted]

    async def _record(self, trades: Sequence[Trade]) -> None:
        """Write trades to the store's trade log and publish them, in order."""
        if not trades:
            return
        async with self._trade_lock:
            try:
                updates = await self._store.write_trades(trades)
            except StoreUnavailable as error:
                self.trades_lost += len(trades)
                self._store_failed(error)
                return
            if self._publish and self._trade_hub is not None:
                self._trade_hub.publish(updates)

    async def record_trades(self, trades: Sequence[Trade]) -> None:
        self._touch()
        await self._record(self._stamped(trades))

    async def trades(self, trades: Sequence[Trade]) -> None:
        self._touch()
        accepted = self._stamped(trades)
        await self._aggregate(accepted)
        await self._record(accepted)
        await self._note_last_trades(accepted)

    async def ticks(self, ticks: Sequence[Trade]) -> None:
        self._touch()
        # Quote ticks are not trades: validated as prices (a zero size is
        # what they carry), aggregated, never recorded as trades.
        await self._aggregate(self.validator.trades(ticks, time.time_ns(), ticks=True))

    async def _aggregate(self, trades: Sequence[Trade]) -> None:
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
            await self._put_quotes(list(changed.values()))

    async def quotes(self, quotes: Sequence[Quote]) -> None:
        self._touch()
        filled = []
        for quote in self.validator.quotes(quotes, time.time_ns()):
            if quote.last is None and quote.symbol in self._last_trade:
                quote = replace(quote, last=self._last_trade[quote.symbol].price)
            self._quotes[quote.symbol] = quote
            filled.append(quote)
            self._hub.note_event_time(quote.symbol, quote.time)
        await self._put_quotes(filled)

    async def _put_quotes(self, quotes: Sequence[Quote]) -> None:
        try:
            await self._store.put_quotes(quotes)
        except StoreUnavailable as error:
            self._store_failed(error)
        else:
            self._store_back()

    async def watermark(self, symbol: str, time: int) -> None:
        self._touch()
        aggregator = self._aggregators.get(symbol)
        if aggregator is None or not self.validator.watermark(symbol, time, _clock()):
            return
        await self._write(aggregator.advance(time))
        self._hub.note_event_time(symbol, time)

    async def market_closed(self, symbol: str) -> None:
        self._touch()
        aggregator = self._aggregators.get(symbol)
        if aggregator is not None:
            aggregator.skip_gap()

    async def candles(self, candles: Sequence[Candle]) -> None:
        self._touch()
        fresh: list[Candle] = []
        for candle in self.validator.candles(candles, time.time_ns()):
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
        if self._floors or self._stored:
            candles = self._aligned(candles)
        if not candles and not self._buffer:
            return
        # Publish in the order the store numbered the updates, even when a
        # feed calls the sink from several tasks and the store write awaits:
        # streams rely on sequence order to skip what they already sent.
        async with self._write_lock:
            batch = list(candles)
            if self._buffer:
                batch = [*self._buffer.values(), *batch]
            try:
                updates = await self._store.write_candles(batch)
            except StoreUnavailable as error:
                self._store_failed(error)
                self._keep(candles)
                return
            self._buffer.clear()
            self._store_back()
            self.candles_out += len(updates)
            if self._publish:
                self._hub.publish(updates)

    async def flush(self) -> None:
        """Write the buffered candles if the store is back."""
        if self._buffer:
            await self._write(())

    def _keep(self, candles: Sequence[Candle]) -> None:
        buffer = self._buffer
        for candle in candles:
            if not candle.closed:
                continue
            key = (candle.series, candle.open_time)
            buffer.pop(key, None)
            buffer[key] = candle
            if len(buffer) > self._buffer_size:
                buffer.popitem(last=False)
                self.buffer_dropped += 1

    def _store_failed(self, error: StoreUnavailable) -> None:
        self.store_errors += 1
        if not self._store_down:
            self._store_down = True
            log.warning("store unavailable, buffering closed candles until it is back: %s", error)

    def _store_back(self) -> None:
        if self._store_down:
            self._store_down = False
            log.warning(
                "store available again (%d writes failed, %d closed candles dropped)",
                self.store_errors,
                self.buffer_dropped,
            )


_LOG_EVERY = 10.0  # seconds between logged refusals of one symbol and reason
_clock = time.time_ns
_THREAD_BATCH = 2000  # trades per symbol from which aggregation leaves the event loop
_ALIGNED = 3  # newest stored candles per series that a new ingestor may revise
_VENUE_MEMORY = 64  # recent candles remembered per series to number venue versions


def _older_or_same(candle: Candle, seen: Candle) -> bool:
    if seen.closed and not candle.closed:
        return True
    if candle.trade_count < seen.trade_count:
        return True
    # The same candle from REST and from the stream differs only in source.
    return replace(candle, revision=seen.revision, source=seen.source) == seen
