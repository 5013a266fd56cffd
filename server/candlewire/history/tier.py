"""The history tier as the service wires it: one object per process.

:class:`HistoryTier` owns the :class:`~candlewire.history.HistoryStore` and
knows which part of the history work a process does:

- every process that serves the API reads through :meth:`api_store`
  (a :class:`~candlewire.history.tiered.TieredStore` over its hot store);
- only the process that ingests writes: with the memory store the ingestor
  writes through :meth:`ingest_store` (closed candles and trades queued for
  PostgreSQL), with Redis :meth:`run_writer` follows the update and trade logs
  while this process holds the ingestion lease; either way it also applies
  the retention.

:attr:`problem` is what readiness reports about PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from candlewire.domain import Interval, SeriesKey
from candlewire.errors import CandlewireError, HistoryUnavailable
from candlewire.history.archive import ArchivingStore, LogArchiver, QueueArchiver
from candlewire.history.postgres import HistoryStore
from candlewire.history.tiered import TieredStore
from candlewire.retry import Backoff, Retry
from candlewire.store.base import Store
from candlewire.tasks import cancel_and_wait

__all__ = ["HistoryTier"]

log = logging.getLogger(__name__)

_RETENTION_EVERY = 3600.0  # seconds between retention passes


class HistoryTier:
    """The history store of this process and the work it does with it."""

    def __init__(
        self,
        url: str,
        *,
        read_url: str = "",
        retention: Mapping[Interval, int] | None = None,
        trade_retention: int | None = None,
        queue_size: int = 100_000,
        hot_retention: int = 5000,
    ) -> None:
        self.store = HistoryStore(
            url, read_url=read_url, retention=retention, trade_retention=trade_retention
        )
        self._queue_size = queue_size
        self._hot_retention = hot_retention
        self.queue: QueueArchiver | None = None
        self.archiver: LogArchiver | None = None
        self._problem: str | None = None

    async def connect(self) -> None:
        """Migrate and connect (ConfigError when PostgreSQL cannot be used)."""
        await self.store.connect()
        log.info("history store connected: %s", self.store.redacted_url)

    async def close(self) -> None:
        await self.store.close()

    def api_store(self, hot: Store) -> TieredStore:
        return TieredStore(hot, self.store)

    def ingest_store(self, hot: Store) -> Store:
        """The store the ingestor writes to when the hot store is in memory."""
        self.queue = QueueArchiver(self.store, capacity=self._queue_size)
        return ArchivingStore(hot, self.queue)

    async def check(self) -> None:
        """Reach PostgreSQL (readiness); the result is kept for :meth:`status`."""
        try:
            await self.store.ping()
        except HistoryUnavailable as error:
            self._problem = str(error)
        else:
            self._problem = None

    @property
    def problem(self) -> str | None:
        """Why PostgreSQL cannot be used now (None: it can), for readiness."""
        if self._problem is not None:
            return self._problem
        writer = self.queue or self.archiver
        if writer is not None and writer.failing:
            return "writes are failing"
        return None

    async def run_writer(
        self,
        hot: Store,
        series: Sequence[SeriesKey],
        *,
        holding: Callable[[], bool] | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        """Write history until cancelled: the queue (memory store) or the log
        archiver (Redis, only while ``holding()``), and the retention."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._retention(holding), name="history-retention")
            if self.queue is not None:
                await self.queue.run()
                return
            self.archiver = LogArchiver(hot, self.store, series, retention=self._hot_retention)
            if holding is None:
                await self.archiver.run()
                return
            while True:
                while not holding():
                    await _wait(wake, 0.5)
                run = asyncio.create_task(self.archiver.run(), name="history-archiver")
                try:
                    while holding() and not run.done():
                        await _wait(wake, 0.5)
                    if run.done():
                        run.result()
                finally:
                    await cancel_and_wait(run)

    async def _retention(self, holding: Callable[[], bool] | None) -> None:
        if not self.store.retention and self.store.trade_retention is None:
            return
        retry = Retry(Backoff(initial=1.0, maximum=60.0), name="history retention")
        while True:
            if holding is None or holding():
                try:
                    await self.store.apply_retention()
                except CandlewireError as error:
                    await retry.wait(error)
                    continue
                retry.succeeded()
            await asyncio.sleep(_RETENTION_EVERY)


async def _wait(event: asyncio.Event | None, seconds: float) -> None:
    if event is None:
        await asyncio.sleep(seconds)
        return
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return
    event.clear()
