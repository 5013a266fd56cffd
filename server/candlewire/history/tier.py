"""The history tier as the service wires it: one object per process.

:class:`HistoryTier` owns the :class:`~candlewire.history.HistoryStore` and
knows which part of the history work a process does:

- every process that serves the API reads through :meth:`api_store`
  (a :class:`~candlewire.history.tiered.TieredStore` over its hot store);
- only the process that ingests writes: with the memory store the ingestor
  writes through :meth:`ingest_store` (closed candles queued for PostgreSQL),
  with Redis :meth:`run_writer` follows the update logs while this process
  holds the ingestion lease; either way it also applies the retention.

:meth:`status` is what readiness reports about PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence

from candlewire.domain import NANOS_PER_SECOND, Interval, SeriesKey
from candlewire.errors import CandlewireError, HistoryUnavailable
from candlewire.history.archive import ArchivingStore, LogArchiver, QueueArchiver
from candlewire.history.postgres import HistoryStore
from candlewire.history.tiered import TieredStore
from candlewire.retry import Backoff, Retry
from candlewire.store.base import Store
from candlewire.tasks import cancel_and_wait

__all__ = ["DEFAULT_RETENTION", "HistoryTier", "format_retention", "parse_retention"]

log = logging.getLogger(__name__)

DEFAULT_RETENTION = "1s=7d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_SPAN = re.compile(r"^(\d+)([smhdw])$")
_RETENTION_EVERY = 3600.0  # seconds between retention passes


def parse_retention(text: str) -> dict[Interval, int]:
    """``1s=7d,1m=365d`` -> interval -> nanoseconds kept; ``forever`` keeps all
    (the default for intervals not named)."""
    kept: dict[Interval, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, span = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not interval=span (for example 1s=7d)")
        interval = Interval.parse(name.strip())
        span = span.strip()
        if span == "forever":
            kept.pop(interval, None)
            continue
        match = _SPAN.match(span)
        if match is None or int(match[1]) == 0:
            raise ValueError(f"{span!r} is not a span like 7d, 12h, 52w or forever")
        kept[interval] = int(match[1]) * _UNITS[match[2]] * NANOS_PER_SECOND
    return kept


def format_retention(kept: Mapping[Interval, int]) -> str:
    return ",".join(f"{i.label}={n // NANOS_PER_SECOND}s" for i, n in sorted(kept.items()))


class HistoryTier:
    """The history store of this process and the work it does with it."""

    def __init__(
        self,
        url: str,
        *,
        read_url: str = "",
        retention: Mapping[Interval, int] | None = None,
        queue_size: int = 100_000,
        hot_retention: int = 5000,
    ) -> None:
        self.store = HistoryStore(url, read_url=read_url, retention=retention)
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

    def status(self) -> tuple[bool, str]:
        if self._problem is not None:
            return False, f"history store (PostgreSQL) unavailable: {self._problem}"
        writer = self.queue or self.archiver
        if writer is not None and writer.failing:
            return False, "history store (PostgreSQL) unavailable: writes are failing"
        return True, "ok"

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
        if not self.store.retention:
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
