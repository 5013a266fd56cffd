"""Rejection counts shared through the store, for every replica to show.

The validation policy counts what it refuses in the ingesting process
(:class:`~candlewire.validate.Rejections`). With a shared store (Redis) the
API replicas are other processes, so:

* :class:`RejectionPublisher` (in a process that ingests) adds what was
  counted since its last flush to the store's totals, once a second (a batch
  per flush, never a write per refused input). It adds differences, so the
  totals outlive the ingestor: the next one to hold the lease adds to them.
  A flush that fails is retried with the next one. Counted input not yet
  flushed when the process dies (at most a second's) is lost.
* :class:`RejectionReader` (in a process that serves) reads the totals once
  a second and answers ``ListSymbols`` and the metrics from that copy. While
  the store cannot be read it keeps the last totals it read.

A process that both ingests and serves on a shared store shows the store's
totals only (which hold its own, once flushed): nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from candlewire.errors import StoreUnavailable
from candlewire.store.base import RejectionLog
from candlewire.validate import Reason, Rejections

__all__ = ["RejectionPublisher", "RejectionReader"]

log = logging.getLogger(__name__)

INTERVAL = 1.0
"""Seconds between flushes, and between reads."""


class RejectionPublisher:
    """Adds this process's new rejection counts to the store's totals."""

    def __init__(
        self, store: RejectionLog, rejections: Rejections, *, interval: float = INTERVAL
    ) -> None:
        self._store = store
        self._rejections = rejections
        self._interval = interval
        self._flushed: dict[tuple[str, Reason], tuple[int, int]] = {}
        """(symbol, reason) -> (count, last time) already added to the store."""
        self._flushing = asyncio.Lock()  # two flushes at once would add the same counts twice

    def pending(self) -> dict[str, dict[int, tuple[int, int]]]:
        """What the store has not been given yet: symbol -> reason -> (count, last time)."""
        out: dict[str, dict[int, tuple[int, int]]] = {}
        for symbol, rows in self._rejections.all().items():
            for reason, count, last in rows:
                done, done_last = self._flushed.get((symbol, reason), (0, 0))
                if count > done or last > done_last:
                    out.setdefault(symbol, {})[reason.value] = (count - done, last)
        return out

    async def flush(self) -> None:
        """Add what was counted since the last flush (raises StoreUnavailable)."""
        async with self._flushing:
            added = self.pending()
            if not added:
                return
            await self._store.add_rejections(added)
            self._flushed_now(added)

    def _flushed_now(self, added: dict[str, dict[int, tuple[int, int]]]) -> None:
        flushed = self._flushed
        for symbol, reasons in added.items():
            for value, (count, last) in reasons.items():
                key = (symbol, Reason(value))
                done = flushed.get(key, (0, 0))[0]
                flushed[key] = (done + count, last)

    async def run(self) -> None:
        """Flush every ``interval`` until cancelled; then once more, briefly."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                try:
                    await self.flush()
                except StoreUnavailable as error:
                    log.debug("rejection counts not flushed (retried): %s", error)
        finally:
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self.flush()


class RejectionReader:
    """The store's rejection totals, read every ``interval``
    (:class:`~candlewire.validate.RejectionCounts`)."""

    def __init__(self, store: RejectionLog, *, interval: float = INTERVAL) -> None:
        self._store = store
        self._interval = interval
        self.symbols: list[str] = []
        """The symbols to read (set once the feed's symbols are known)."""
        self._counts: dict[str, list[tuple[Reason, int, int]]] = {}
        self.reads = 0
        """Reads that succeeded."""

    def of(self, symbol: str) -> list[tuple[Reason, int, int]]:
        return self._counts.get(symbol, [])

    def all(self) -> dict[str, list[tuple[Reason, int, int]]]:
        return {symbol: rows for symbol, rows in self._counts.items() if rows}

    async def read(self) -> None:
        """Read the totals now (raises StoreUnavailable; the last totals stay)."""
        found = await self._store.rejection_counts(self.symbols)
        counts: dict[str, list[tuple[Reason, int, int]]] = {}
        for symbol, reasons in found.items():
            rows = []
            for value, (count, last) in sorted(reasons.items()):
                try:
                    reason = Reason(value)
                except ValueError:
                    continue  # a reason of a newer version: not shown
                rows.append((reason, count, last))
            counts[symbol] = rows
        self._counts = counts
        self.reads += 1

    async def run(self) -> None:
        """Read every ``interval`` until cancelled."""
        while True:
            try:
                await self.read()
            except StoreUnavailable as error:
                log.debug("rejection counts not read (the last ones stay): %s", error)
            await asyncio.sleep(self._interval)
