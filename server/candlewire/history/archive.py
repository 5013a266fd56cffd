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
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Sequence

from candlewire.codec import frame_to_candle
from candlewire.domain import Candle, Interval, Quote, SeriesKey
from candlewire.errors import DataExpired, HistoryUnavailable, StoreUnavailable
from candlewire.history.postgres import HistoryRow, HistoryStore
from candlewire.retry import Backoff, Retry
from candlewire.store.base import CandleSlice, HotTrades, Position, Snapshot, Store, Update

__all__ = ["ArchivingStore", "LogArchiver", "QueueArchiver"]

log = logging.getLogger(__name__)

_BATCH = 20_000


def _row(update: Update) -> HistoryRow:
    return HistoryRow(
        update.series.symbol, update.series.interval, update.open_time, update.revision,
        update.frame,
    )  # fmt: skip


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

    @property
    def pending(self) -> int:
        return len(self._queue)

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
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
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


class ArchivingStore(HotTrades):
    """A hot store whose closed candle versions also go to a :class:`QueueArchiver`."""

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
        self.written = 0
        self.lost = 0
        """Times the logs no longer held the updates after a checkpoint."""
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
                self._checkpoints = None  # reread: a failed commit may or may not have landed
                await retry.wait(error)
                continue
            self.failing = False
            retry.succeeded()
            await asyncio.sleep(self._poll)

    def checkpoint(self, symbol: str) -> int:
        """The sequence number archived through for ``symbol`` in the current epoch."""
        found = (self._checkpoints or {}).get(symbol)
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
        self.passes += 1
        return written

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
