"""The hot store and the history tier as one :class:`~candlewire.store.base.Store`.

Reads take from the hot store what it holds and from PostgreSQL what is
older. The seam is the hot store's oldest candle of the series at the time
of the read: history contributes only candles strictly older than it, the
hot store everything from it on, so a candle is never served twice and the
forming candle always comes from the hot store. A read that needs history
while PostgreSQL is away raises :class:`~candlewire.errors.HistoryUnavailable`
(``UNAVAILABLE``); reads the hot store answers alone never touch PostgreSQL.

Trades are stitched the same way (:class:`~candlewire.store.base.TradeHistory`,
for ``GetTrades`` and ``GetVolumeProfile``): the seam is the hot trade log's
oldest trade. A read whose ``start`` is after that trade's mark, or that
continues from a cursor the hot log still holds, is the hot store's alone;
otherwise PostgreSQL gives the trades received before the seam (older epochs
of the hot store, then its current epoch's evicted trades) and the hot store
the rest. Streams (``SubscribeTrades``) read the hot trade log only.

Everything else (quotes, writes, positions, update logs) is the hot store's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from candlewire.domain import Candle, Quote, SeriesKey
from candlewire.history.postgres import BEGIN, HistoryStore, gaps
from candlewire.store.base import (
    CandleSlice,
    HotTrades,
    Position,
    Snapshot,
    Store,
    TradeSlice,
    Update,
)

__all__ = ["TieredStore"]

_MIN = -(2**63)
_EVERYTHING = 10**9  # "no limit" for a snapshot's history part
_EARLIEST_TTL = 5.0  # seconds the per-series earliest open times are reused
_RACES = 4  # reads again when the hot trade log evicted past the seam meanwhile


def _concat(older: CandleSlice, newer: CandleSlice) -> CandleSlice:
    if not len(older):
        return newer
    if not len(newer):
        return older
    return CandleSlice([*older.open_times, *newer.open_times], [*older.frames, *newer.frames])


class TieredStore(HotTrades):
    """Implements :class:`~candlewire.store.base.Store` over ``hot`` and ``history``."""

    def __init__(self, hot: Store, history: HistoryStore) -> None:
        self.hot = hot
        self.history = history
        self._earliest: tuple[float, dict[SeriesKey, int]] | None = None

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
        return await self.hot.write_candles(candles)

    async def head(self, symbols: Sequence[str]) -> dict[str, int]:
        return await self.hot.head(symbols)

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        return await self.hot.read_updates(series, after)

    async def hot_oldest(self, series: SeriesKey) -> int | None:
        """The open time of the hot store's oldest candle of ``series``."""
        found = await self.hot.get_candles(series, start=_MIN, end=None, limit=1)
        return found.open_times[0] if len(found) else None

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        if limit <= 0:
            return CandleSlice((), ())
        hot = self.hot
        if start is None:
            newer = await hot.get_candles(series, start=None, end=end, limit=limit)
            if len(newer) >= limit:
                return newer
            # Fewer than asked: the hot store gave all it holds before `end`.
            seam = newer.open_times[0] if len(newer) else end
            older = await self.history.get_candles(
                series, start=None, end=seam, limit=limit - len(newer)
            )
            return _concat(older, newer)
        oldest = await self.hot_oldest(series)
        if oldest is not None and start >= oldest:
            return await hot.get_candles(series, start=start, end=end, limit=limit)
        seam = oldest if oldest is not None and (end is None or oldest < end) else end
        older = await self.history.get_candles(series, start=start, end=seam, limit=limit)
        if len(older) >= limit or oldest is None or seam != oldest:
            return older
        newer = await hot.get_candles(series, start=oldest, end=end, limit=limit - len(older))
        if len(newer) and newer.open_times[0] > oldest:
            # The hot store evicted candles since its oldest was read: they are
            # older than what it holds now, so history has them.
            between = await self.history.get_candles(
                series, start=oldest, end=newer.open_times[0], limit=limit - len(older)
            )
            older = _concat(older, between)
            newer = CandleSlice(
                newer.open_times[: limit - len(older)], newer.frames[: limit - len(older)]
            )
        return _concat(older, newer)

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: Position | None = None,
    ) -> Snapshot:
        snapshot = await self.hot.snapshot(
            series, history=history, start=start, closed_only=closed_only, at=at
        )
        slices: list[CandleSlice] = []
        for key, newer in zip(series, snapshot.slices, strict=True):
            if start is None and len(newer) >= history:
                slices.append(newer)
                continue
            seam = newer.open_times[0] if len(newer) else await self.hot_oldest(key)
            if start is not None:
                if seam is not None and seam <= start:
                    slices.append(newer)
                    continue
                older = await self.history.get_candles(
                    key, start=start, end=seam, limit=_EVERYTHING
                )
            else:
                older = await self.history.get_candles(
                    key, start=None, end=seam, limit=history - len(newer)
                )
            slices.append(_concat(older, newer))
        return Snapshot(snapshot.position, slices)

    # -- trades ------------------------------------------------------------

    async def _hot_first(self, symbol: str) -> int:
        """The sequence number of the hot log's oldest trade (its head + 1 when empty)."""
        found = await self.hot.get_trades(symbol, after=0, limit=1)
        if len(found):
            return found.seqs[0]
        return (await self.hot.trade_heads([symbol])).get(symbol, 0) + 1

    async def page_trades(
        self,
        symbol: str,
        *,
        start: int | None,
        end: int | None,
        after: int | None,
        upto: int | None,
        limit: int,
    ) -> TradeSlice:
        if limit <= 0:
            return TradeSlice((), (), True)
        hot = self.hot
        if after is not None and after >= 0:
            found = await hot.get_trades(
                symbol, start=start, end=end, after=after, upto=upto, limit=limit
            )
            if found.complete:
                return found
        elif after is None and start is not None:
            probe = await hot.get_trades(symbol, end=start, limit=1)
            if len(probe):
                # The hot log's oldest trade is before `start`: so is every
                # trade received before it (marks never decrease).
                return await hot.get_trades(symbol, start=start, end=end, upto=upto, limit=limit)
        complete = True
        if after is None:
            horizon = await self.history.trade_horizon()
            complete = horizon is None or (start is not None and start >= horizon)
        epoch = hot.epoch
        cursor = BEGIN if after is None else after
        cursors: list[int] = []
        frames: list[bytes] = []
        for _ in range(_RACES):
            seam = await self._hot_first(symbol)
            bound = seam if upto is None else min(seam, upto + 1)
            older = await self.history.trades_after(
                symbol,
                epoch,
                after=cursor,
                before=bound,
                start=start,
                end=end,
                limit=limit - len(frames),
            )
            if len(older):
                cursors.extend(older.cursors)
                frames.extend(older.frames)
                cursor = older.cursors[-1]
            if len(frames) >= limit:
                break
            newer = await hot.get_trades(
                symbol,
                start=start,
                end=end,
                after=max(cursor, seam - 1),
                upto=upto,
                limit=limit - len(frames),
            )
            if newer.complete:
                cursors.extend(newer.seqs)
                frames.extend(newer.frames)
                break
            # The hot log evicted trades after the seam since it was read:
            # history has them now; read on from there.
        return TradeSlice(cursors, frames, complete)

    async def latest_trades(self, symbol: str, *, end: int | None, limit: int) -> TradeSlice:
        hot = self.hot
        newer = await hot.get_trades(symbol, end=end, limit=limit, latest=True)
        if len(newer) >= limit:
            return newer
        # Fewer than asked: the hot log gave every trade it holds before `end`.
        seam = newer.seqs[0] if len(newer) else await self._hot_first(symbol)
        older = await self.history.trades_before(
            symbol, hot.epoch, before=seam, end=end, limit=limit - len(newer)
        )
        if not len(older):
            return newer
        return TradeSlice(
            [*older.cursors, *newer.seqs], [*older.frames, *newer.frames], newer.complete
        )

    # -- coverage ----------------------------------------------------------

    async def earliest(self, series: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        """The oldest open time stored of each series, in either tier (cached briefly)."""
        cached = self._earliest
        now = time.monotonic()
        if (
            cached is not None
            and now - cached[0] < _EARLIEST_TTL
            and all(k in cached[1] for k in series)
        ):
            return {k: cached[1][k] for k in series}
        found = await self.history.earliest(series)
        for key in series:
            oldest = await self.hot_oldest(key)
            if oldest is not None and (key not in found or oldest < found[key]):
                found[key] = oldest
        if all(k in found for k in series):
            self._earliest = (now, dict(found))
        return found

    async def missing(self, series: SeriesKey, start: int, end: int) -> list[tuple[int, int]]:
        """Ranges of ``[start, end)`` (``start`` aligned) with no candle in either tier."""
        if end <= start:
            return []
        oldest = await self.hot_oldest(series)
        if oldest is None or oldest >= end:
            return await self.history.missing(series, start, end)
        holes: list[tuple[int, int]] = []
        if start < oldest:
            holes = await self.history.missing(series, start, oldest)
        lo = max(start, oldest)
        found = await self.hot.get_candles(series, start=lo, end=end, limit=10**7)
        holes.extend(gaps(series.interval, lo, end, list(found.open_times)))
        merged: list[tuple[int, int]] = []
        for hole in holes:
            if merged and merged[-1][1] == hole[0]:
                merged[-1] = (merged[-1][0], hole[1])
            else:
                merged.append(hole)
        return merged
