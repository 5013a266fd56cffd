"""The write path into history: behind the hot store, in batches, never in the way.

Only the process that ingests writes history. Two archivers, one per hot store:

- :class:`LogArchiver` (Redis): follows the per-series update logs from a
  checkpoint per symbol (the dataset's epoch and the sequence number archived
  through), saved in PostgreSQL in the same transaction as the rows. An
  ingestor crash, a fail-over or a PostgreSQL outage therefore loses nothing
  and duplicates nothing while the logs still hold the updates after the
  checkpoint (``CANDLEWIRE_UPDATE_LOG_SIZE`` per series). Beyond that the
  gap is logged and what the hot store still holds (up to
  ``CANDLEWIRE_RETENTION`` candles per series) is archived instead.
- :class:`QueueArchiver` (memory store): :class:`ArchivingStore` hands it the
  closed candle versions as the hot store numbers them; it keeps the newest
  version per candle in a bounded queue and counts what it had to drop.

Both write with :meth:`HistoryStore.write` (newest revision wins), retry with
the service's :class:`~candlewire.retry.Retry`, and never block the live path.

Trades take the same two paths: :class:`LogArchiver` follows each symbol's
trade log from a trade checkpoint saved with the rows (``trade_checkpoints``;
beyond the log it archives what the hot store still holds), and
:class:`QueueArchiver` keeps the trades :class:`ArchivingStore` hands it in a
bounded queue of its own, counting what it drops (:attr:`QueueArchiver.trades_dropped`).
A trade is named by the hot store's epoch and its sequence number, so one
written twice is stored once (:meth:`HistoryStore.write_trades`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict, deque
from collections.abc import Sequence
from itertools import islice

from candlewire.codec import frame_to_candle
from candlewire.domain import Candle, Interval, Quote, SeriesKey, Trade
from candlewire.errors import DataExpired, HistoryUnavailable, StoreUnavailable
from candlewire.history.postgres import HistoryRow, HistoryStore, TradeRow
from candlewire.retry import Backoff, Retry
from candlewire.store.base import (
    CandleSlice,
    HotTrades,
    Position,
    Snapshot,
    Store,
    TradeUpdate,
    Update,
)

__all__ = ["ArchivingStore", "LogArchiver", "QueueArchiver"]

log = logging.getLogger(__name__)

_BATCH = 20_000


def _row(update: Update) -> HistoryRow:
    return HistoryRow(
        update.series.symbol, update.series.interval, update.open_time, update.revision,
        update.frame,
    )  # fmt: skip


def _trade_row(update: TradeUpdate, epoch: bytes) -> TradeRow:
    return TradeRow(update.series.symbol, epoch, update.seq, update.mark, update.frame)


def _retryable(error: BaseException) -> bool:
    return isinstance(error, HistoryUnavailable | StoreUnavailable | OSError | TimeoutError)


class QueueArchiver:
    """A bounded queue of closed candles on their way to PostgreSQL."""

    def __init__(
        self, history: HistoryStore, *, capacity: int = 100_000, batch: int = _BATCH
    ) -> None:
        self._history = history
        self._capacity = capacity
        self._batch = batch
        self._queue: OrderedDict[tuple[SeriesKey, int], HistoryRow] = OrderedDict()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0
        """Closed candles dropped because the queue was full (PostgreSQL too slow or away)."""
        self.written = 0
        self.failing = False
        self._trades: deque[TradeRow] = deque()
        self._trades_out = 0  # trades ever taken off the left of the queue
        self.trades_dropped = 0
        """Trades dropped because their queue was full (PostgreSQL too slow or away)."""
        self.trades_written = 0

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._trades)

    @property
    def trades_pending(self) -> int:
        return len(self._trades)

    def offer_trades(self, updates: Sequence[TradeUpdate], epoch: bytes) -> None:
        """Queue stored trades (of the hot store's ``epoch``); never waits."""
        if not updates:
            return
        trades = self._trades
        for update in updates:
            trades.append(_trade_row(update, epoch))
        excess = len(trades) - self._capacity
        if excess > 0:
            for _ in range(excess):
                trades.popleft()
            self._trades_out += excess
            before = self.trades_dropped
            self.trades_dropped += excess
            if before == 0 or before // 10_000 != self.trades_dropped // 10_000:
                log.error("history trade queue full: %d trades dropped", self.trades_dropped)
        self._idle.clear()
        self._wake.set()

    def offer(self, updates: Sequence[Update]) -> None:
        """Queue the closed versions among ``updates``; never waits."""
        queue = self._queue
        added = False
        for update in updates:
            if not update.closed:
                continue
            key = (update.series, update.open_time)
            found = queue.get(key)
            if found is not None and found.revision >= update.revision:
                continue
            queue[key] = _row(update)
            added = True
            if len(queue) > self._capacity:
                queue.popitem(last=False)
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    log.error("history queue full: %d closed candles dropped", self.dropped)
        if added:
            self._idle.clear()
            self._wake.set()

    async def drained(self) -> None:
        """Return once everything offered so far is written."""
        await self._idle.wait()

    async def run(self) -> None:
        retry = Retry(
            Backoff(initial=0.1, maximum=5.0), name="history writer", retryable=_retryable
        )
        while True:
            if not self._queue and not self._trades:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            if self._trades:
                try:
                    await self._write_trades()
                except HistoryUnavailable as error:
                    self.failing = True
                    await retry.wait(error)
                    continue
                if not self._queue:
                    self.failing = False
                    retry.succeeded()
                    continue
            rows: list[HistoryRow] = []
            keys = []
            for key, row in self._queue.items():
                rows.append(row)
                keys.append(key)
                if len(rows) >= self._batch:
                    break
            try:
                await self._history.write(rows)
            except HistoryUnavailable as error:
                self.failing = True
                await retry.wait(error)
                continue
            self.failing = False
            retry.succeeded()
            queue = self._queue
            for key, row in zip(keys, rows, strict=True):
                if queue.get(key) is row:  # not replaced by a newer revision meanwhile
                    del queue[key]
            self.written += len(rows)

    async def _write_trades(self) -> None:
        """Write the oldest batch of queued trades, then take it off the queue
        (less what was dropped from it meanwhile)."""
        taken = self._trades_out
        batch = list(islice(self._trades, self._batch))
        await self._history.write_trades(batch)
        done = taken + len(batch) - self._trades_out
        for _ in range(max(0, done)):
            self._trades.popleft()
        self._trades_out += max(0, done)
        self.trades_written += len(batch)


class ArchivingStore(HotTrades):
    """A hot store whose closed candle versions and trades also go to a
    :class:`QueueArchiver`."""

    def __init__(self, hot: Store, archiver: QueueArchiver) -> None:
        self.hot = hot
        self.archiver = archiver

    @property
    def epoch(self) -> bytes:
        return self.hot.epoch

    async def ping(self) -> None:
        await self.hot.ping()

    async def close(self) -> None:
        await self.hot.close()

    async def put_quotes(self, quotes: Sequence[Quote]) -> None:
        await self.hot.put_quotes(quotes)

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        return await self.hot.get_quotes(symbols)

    async def recent_ticks(self, symbol: str, limit: int) -> list[Quote]:
        return await self.hot.recent_ticks(symbol, limit)

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        updates = await self.hot.write_candles(candles)
        self.archiver.offer(updates)
        return updates

    async def write_trades(self, trades: Sequence[Trade]) -> list[TradeUpdate]:
        updates = await self.hot.write_trades(trades)
        self.archiver.offer_trades(updates, self.hot.epoch)
        return updates

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        return await self.hot.get_candles(series, start=start, end=end, limit=limit)

    async def head(self, symbols: Sequence[str]) -> dict[str, int]:
        return await self.hot.head(symbols)

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: Position | None = None,
    ) -> Snapshot:
        return await self.hot.snapshot(
            series, history=history, start=start, closed_only=closed_only, at=at
        )

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        return await self.hot.read_updates(series, after)


class LogArchiver:
    """Archives closed candles from the hot store's update logs, with checkpoints."""

    def __init__(
        self,
        hot: Store,
        history: HistoryStore,
        series: Sequence[SeriesKey],
        *,
        poll: float = 0.5,
        retention: int = 5000,
        batch: int = _BATCH,
    ) -> None:
        self._hot = hot
        self._history = history
        self._groups: dict[str, list[SeriesKey]] = defaultdict(list)
        for key in series:
            self._groups[key.symbol].append(key)
        self._poll = poll
        self._retention = retention
        self._batch = batch
        self._checkpoints: dict[str, tuple[bytes, int]] | None = None
        self._trade_checkpoints: dict[str, tuple[bytes, int]] | None = None
        self.written = 0
        self.lost = 0
        """Times the logs no longer held the updates after a checkpoint."""
        self.trades_written = 0
        self.trades_lost = 0
        """Times the trade logs no longer held the trades after a checkpoint."""
        self.failing = False
        self.passes = 0

    async def run(self) -> None:
        """Archive until cancelled (every ``poll`` seconds)."""
        retry = Retry(
            Backoff(initial=0.1, maximum=5.0), name="history archiver", retryable=_retryable
        )
        while True:
            try:
                await self.archive_once()
            except (HistoryUnavailable, StoreUnavailable) as error:
                self.failing = True
                # reread: a failed commit may or may not have landed
                self._checkpoints = self._trade_checkpoints = None
                await retry.wait(error)
                continue
            self.failing = False
            retry.succeeded()
            await asyncio.sleep(self._poll)

    def checkpoint(self, symbol: str) -> int:
        """The sequence number archived through for ``symbol`` in the current epoch."""
        found = (self._checkpoints or {}).get(symbol)
        return found[1] if found is not None and found[0] == self._hot.epoch else 0

    def trade_checkpoint(self, symbol: str) -> int:
        """The trade sequence number archived through for ``symbol`` in the current epoch."""
        found = (self._trade_checkpoints or {}).get(symbol)
        return found[1] if found is not None and found[0] == self._hot.epoch else 0

    async def archive_once(self) -> int:
        """One pass over every symbol; returns the rows written."""
        if self._checkpoints is None:
            self._checkpoints = await self._history.checkpoints()
        checkpoints = self._checkpoints
        written = 0
        for symbol, keys in self._groups.items():
            epoch = self._hot.epoch
            found = checkpoints.get(symbol)
            after = found[1] if found is not None and found[0] == epoch else 0
            try:
                updates = await self._hot.read_updates(keys, {symbol: after})
            except DataExpired:
                written += await self._recover(symbol, keys, epoch)
                continue
            if not updates:
                continue
            for start in range(0, len(updates), self._batch):
                chunk = updates[start : start + self._batch]
                rows = [_row(u) for u in chunk if u.closed]
                mark = (epoch, chunk[-1].seq)
                await self._history.write(rows, {symbol: mark})
                checkpoints[symbol] = mark
                written += len(rows)
        self.written += written
        written += await self._archive_trades()
        self.passes += 1
        return written

    async def _archive_trades(self) -> int:
        """One pass over every symbol's trade log; returns the trades written."""
        if self._trade_checkpoints is None:
            self._trade_checkpoints = await self._history.trade_checkpoints()
        checkpoints = self._trade_checkpoints
        written = 0
        for symbol in self._groups:
            epoch = self._hot.epoch
            found = checkpoints.get(symbol)
            after = found[1] if found is not None and found[0] == epoch else 0
            try:
                trades = await self._hot.read_trades([symbol], {symbol: after})
            except DataExpired:
                written += await self._recover_trades(symbol, epoch)
                continue
            for start in range(0, len(trades), self._batch):
                chunk = trades[start : start + self._batch]
                mark = (epoch, chunk[-1].seq)
                await self._history.write_trades(
                    [_trade_row(t, epoch) for t in chunk], {symbol: mark}
                )
                checkpoints[symbol] = mark
                written += len(chunk)
        self.trades_written += written
        return written

    async def _recover_trades(self, symbol: str, epoch: bytes) -> int:
        """The trade log lost trades after the checkpoint: archive what it holds."""
        self.trades_lost += 1
        log.error(
            "history archive of %s trades fell behind the trade log: archiving the trades "
            "it still holds; trades evicted meanwhile are not archived",
            symbol,
        )
        assert self._trade_checkpoints is not None
        for _ in range(5):
            oldest = await self._hot.get_trades(symbol, after=0, limit=1)
            if not len(oldest):
                return 0
            try:
                trades = await self._hot.read_trades([symbol], {symbol: oldest.seqs[0] - 1})
            except DataExpired:
                continue  # evicted since: start again from the new oldest
            written = 0
            for start in range(0, len(trades), self._batch):
                chunk = trades[start : start + self._batch]
                mark = (epoch, chunk[-1].seq)
                await self._history.write_trades(
                    [_trade_row(t, epoch) for t in chunk], {symbol: mark}
                )
                self._trade_checkpoints[symbol] = mark
                written += len(chunk)
            return written
        return 0

    async def _recover(self, symbol: str, keys: Sequence[SeriesKey], epoch: bytes) -> int:
        """The logs lost updates after the checkpoint: archive what the hot store holds."""
        self.lost += 1
        log.error(
            "history archive of %s fell behind the update logs (kept %s): archiving the "
            "candles the hot store still holds; closed candles evicted meanwhile are not archived",
            symbol,
            "CANDLEWIRE_UPDATE_LOG_SIZE",
        )
        head = (await self._hot.head([symbol])).get(symbol, 0)
        rows: list[HistoryRow] = []
        for key in keys:
            found = await self._hot.get_candles(key, start=None, end=None, limit=self._retention)
            for open_time, frame in zip(found.open_times, found.frames, strict=True):
                candle = frame_to_candle(frame)
                if candle.closed:
                    rows.append(
                        HistoryRow(
                            symbol, Interval(key.interval), open_time, candle.revision, frame
                        )
                    )
        assert self._checkpoints is not None
        starts = range(0, max(len(rows), 1), self._batch)
        for start in starts:
            last = start == starts[-1]
            await self._history.write(
                rows[start : start + self._batch], {symbol: (epoch, head)} if last else None
            )
        self._checkpoints[symbol] = (epoch, head)
        return len(rows)
