"""Coverage: which open times a series holds, and where it has holes.

A store that knows its coverage cheaply implements :class:`Coverage` (the
history tier's :class:`~candlewire.history.tiered.TieredStore` does);
:func:`coverage_of` gives any other store the same answers from its
``get_candles``, which is what a hot store alone holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from candlewire.domain import SeriesKey
from candlewire.intervals import bucket_end
from candlewire.store.base import Store

__all__ = ["Coverage", "coverage_of", "gaps"]

_MIN = -(2**63)
_ALL = 10**7


@runtime_checkable
class Coverage(Protocol):
    async def earliest(self, series: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        """The oldest open time held of each series that holds any."""
        ...

    async def missing(self, series: SeriesKey, start: int, end: int) -> list[tuple[int, int]]:
        """Ranges ``[lo, hi)`` of open times in ``[start, end)`` (``start`` a
        candle's open time) with no candle, ascending."""
        ...


def gaps(series: SeriesKey, start: int, end: int, times: Sequence[int]) -> list[tuple[int, int]]:
    """Ranges in ``[start, end)`` with no open time in ``times`` (ascending)."""
    holes: list[tuple[int, int]] = []
    expected = start
    for t in times:
        if t < expected:
            continue
        if t > expected:
            holes.append((expected, min(t, end)))
        expected = bucket_end(series.interval, t)
        if expected >= end:
            break
    if expected < end:
        holes.append((expected, end))
    return holes


class _FromCandles:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def earliest(self, series: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        found: dict[SeriesKey, int] = {}
        for key in series:
            first = await self._store.get_candles(key, start=_MIN, end=None, limit=1)
            if len(first):
                found[key] = first.open_times[0]
        return found

    async def missing(self, series: SeriesKey, start: int, end: int) -> list[tuple[int, int]]:
        held = await self._store.get_candles(series, start=start, end=end, limit=_ALL)
        return gaps(series, start, end, held.open_times)


def coverage_of(store: Store) -> Coverage:
    """``store`` itself when it implements :class:`Coverage`, else answers
    read from its candles."""
    return store if isinstance(store, Coverage) else _FromCandles(store)
