"""The store interface and the values it returns.

Every candle version written gets a *sequence number*: a position in the
store's update log, increasing across all series of the store. A resume token
is a position; the store can replay the updates of any set of series after a
position while they are retained, and can rebuild the history snapshot that
was current at a position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from candlewire.domain import Candle, Quote, SeriesKey

__all__ = ["CandleSlice", "Connects", "Snapshot", "Store", "Update"]


@dataclass(frozen=True, slots=True)
class Update:
    """One stored candle version, as written to the update log."""

    seq: int
    series: SeriesKey
    open_time: int
    revision: int
    closed: bool
    frame: bytes
    """The candle, encoded once (see :mod:`candlewire.codec`)."""


@dataclass(frozen=True, slots=True)
class CandleSlice:
    """Candles of one series, ascending by open time."""

    open_times: Sequence[int]
    frames: Sequence[bytes]

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Candles of several series as they were at log position ``position``."""

    position: int
    slices: Sequence[CandleSlice]


class Store(Protocol):
    """What the service needs from a store. Implementations raise
    :class:`~candlewire.errors.StoreUnavailable` when they cannot be reached and
    :class:`~candlewire.errors.DataExpired` for positions no longer retained."""

    @property
    def epoch(self) -> bytes:
        """Eight bytes naming this update log; positions of another epoch are invalid."""
        ...

    async def ping(self) -> None:
        """Return when the store is reachable; raise StoreUnavailable otherwise."""
        ...

    async def close(self) -> None: ...

    async def put_quotes(self, quotes: Sequence[Quote]) -> None:
        """Replace the latest quote of each symbol."""
        ...

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        """The latest quote of each symbol, None where there is none."""
        ...

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        """Upsert candles by (series, open_time) and append them to the log.

        A version whose revision is not newer than the stored one is ignored
        (writes are idempotent); the returned updates are those applied, in
        order, with their sequence numbers.
        """
        ...

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        """Candles with ``start <= open_time < end``: the first ``limit`` of them
        when ``start`` is given, otherwise the last ``limit``."""
        ...

    async def head(self) -> int:
        """The sequence number of the newest update (0 when empty)."""
        ...

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: int | None = None,
    ) -> Snapshot:
        """For each series, the last ``history`` candles (or those with
        ``open_time >= start``), as they were at position ``at`` (default: now)."""
        ...

    async def read_updates(self, series: Sequence[SeriesKey], after: int) -> list[Update]:
        """Updates of ``series`` with ``seq > after``, in sequence order."""
        ...


@runtime_checkable
class Connects(Protocol):
    """A store that must be connected before use (the app awaits
    :meth:`connect` before serving; :attr:`Store.epoch` is valid after it)."""

    async def connect(self) -> None:
        """Reach the store and load what the sync properties return; raise
        StoreUnavailable when it cannot be reached."""
        ...
