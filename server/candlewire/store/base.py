"""The store interface and the values it returns.

Every candle version written gets a *sequence number* that grows with every
update of the same symbol (across that symbol's intervals). Numbers of
different symbols are not comparable: a store may number each symbol on its
own (Redis Cluster does, one counter per symbol slot) or share one counter
(the memory store does). A *position* maps symbols to the last sequence
number seen of each (a missing symbol is 0). The store can replay the updates
of any set of series after a position while they are retained, and can
rebuild the history snapshot that was current at a position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from candlewire.domain import Candle, Quote, SeriesKey

__all__ = ["CandleSlice", "Connects", "Position", "Snapshot", "Store", "Update"]

Position = Mapping[str, int]
"""Symbol -> the sequence number of its last update seen (missing: 0)."""


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
    """Candles of several series as they were at ``position`` (which names
    every symbol of the series)."""

    position: dict[str, int]
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

    async def recent_ticks(self, symbol: str, limit: int) -> list[Quote]:
        """The last ``limit`` quotes put for ``symbol`` (at most the number the
        store keeps), oldest first."""
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

    async def head(self, symbols: Sequence[str]) -> dict[str, int]:
        """Per symbol, the sequence number of its newest update (0 when none)."""
        ...

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: Position | None = None,
    ) -> Snapshot:
        """For each series, the last ``history`` candles (or those with
        ``open_time >= start``), as they were at position ``at`` (default: now)."""
        ...

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        """Updates of ``series`` with ``seq > after[symbol]``, in sequence
        order per symbol (the order across symbols is the store's)."""
        ...


@runtime_checkable
class Connects(Protocol):
    """A store that must be connected before use (the app awaits
    :meth:`connect` before serving; :attr:`Store.epoch` is valid after it)."""

    async def connect(self) -> None:
        """Reach the store and load what the sync properties return; raise
        StoreUnavailable when it cannot be reached."""
        ...
