"""The in-memory store: the embedded default.

Per series, candles live in parallel arrays sorted by open time (the encoded
frame, the revision and the closed flag), capped at ``retention``; the update
log keeps the last ``log_size`` updates per series. Every method completes
without awaiting, so each call is atomic with respect to the others.
"""

from __future__ import annotations

import heapq
import os
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from operator import attrgetter

from candlewire.codec import candle_frame
from candlewire.domain import Candle, Interval, Quote, SeriesKey
from candlewire.errors import DataExpired
from candlewire.store.base import CandleSlice, Snapshot, Update

__all__ = ["MemoryStore"]

_by_seq = attrgetter("seq")


class _Series:
    __slots__ = (
        "closed",
        "evicted_seq",
        "frames",
        "log",
        "log_seqs",
        "open_times",
        "revisions",
        "trimmed_upto",
    )

    def __init__(self) -> None:
        self.open_times = array("q")
        self.revisions = array("l")
        self.closed = array("b")
        self.frames: list[bytes] = []
        self.log: list[Update] = []
        self.log_seqs = array("q")
        self.trimmed_upto = 0  # every update with seq <= this may be gone from the log
        self.evicted_seq = 0  # seq of the last write that evicted a candle


class MemoryStore:
    """Implements :class:`~candlewire.store.base.Store` in process memory."""

    def __init__(self, *, retention: int = 5000, log_size: int = 4096) -> None:
        if retention < 1 or log_size < 1:
            raise ValueError("retention and log_size must be positive")
        self._retention = retention
        self._log_size = log_size
        self._series: dict[SeriesKey, _Series] = {}
        self._quotes: dict[str, Quote] = {}
        self._seq = 0
        self._epoch = os.urandom(8)

    @property
    def epoch(self) -> bytes:
        return self._epoch

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put_quotes(self, quotes: Sequence[Quote]) -> None:
        for quote in quotes:
            self._quotes[quote.symbol] = quote

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        return [self._quotes.get(symbol) for symbol in symbols]

    async def head(self) -> int:
        return self._seq

    def _cutoffs(self, candles: Sequence[Candle]) -> dict[SeriesKey, int]:
        """For a batch larger than the retention (a backfill), the oldest open
        time per series that survives the batch: older candles are skipped
        instead of being encoded and evicted again."""
        times: dict[SeriesKey, set[int]] = {}
        for candle in candles:
            times.setdefault(candle.series, set()).add(candle.open_time)
        cutoffs: dict[SeriesKey, int] = {}
        for key, new in times.items():
            s = self._series.get(key)
            if s is not None:
                new.update(s.open_times)
            if len(new) > self._retention:
                cutoffs[key] = sorted(new)[-self._retention]
        return cutoffs

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        applied: list[Update] = []
        cutoffs = self._cutoffs(candles) if len(candles) > self._retention else {}
        key = SeriesKey("", Interval.S1)
        s = _Series()
        for candle in candles:
            if candle.interval is not key.interval or candle.symbol != key.symbol:
                key = candle.series  # batches come grouped by series: build keys once a run
                s = self._series.get(key) or self._series.setdefault(key, _Series())
            if cutoffs and candle.open_time < cutoffs.get(key, candle.open_time):
                continue
            times = s.open_times
            i = bisect_left(times, candle.open_time)
            exists = i < len(times) and times[i] == candle.open_time
            if exists and candle.revision <= s.revisions[i]:
                continue
            if not exists and i == 0 and len(times) >= self._retention:
                continue  # older than everything retained: it would be evicted at once
            frame = candle_frame(candle)
            self._seq += 1
            if exists:
                s.frames[i] = frame
                s.revisions[i] = candle.revision
                s.closed[i] = candle.closed
            else:
                times.insert(i, candle.open_time)
                s.frames.insert(i, frame)
                s.revisions.insert(i, candle.revision)
                s.closed.insert(i, candle.closed)
                if len(times) > self._retention:
                    excess = len(times) - self._retention
                    del times[:excess], s.frames[:excess], s.revisions[:excess]
                    del s.closed[:excess]
                    s.evicted_seq = self._seq
            update = Update(self._seq, key, candle.open_time, candle.revision, candle.closed, frame)
            s.log.append(update)
            s.log_seqs.append(self._seq)
            if len(s.log) >= 2 * self._log_size:
                cut = len(s.log) - self._log_size
                s.trimmed_upto = s.log_seqs[cut - 1]
                del s.log[:cut], s.log_seqs[:cut]
            applied.append(update)
        return applied

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        s = self._series.get(series)
        if s is None or limit <= 0:
            return CandleSlice((), ())
        times = s.open_times
        lo = 0 if start is None else bisect_left(times, start)
        hi = len(times) if end is None else bisect_left(times, end)
        if start is not None:
            hi = min(hi, lo + limit)
        else:
            lo = max(lo, hi - limit)
        if lo >= hi:
            return CandleSlice((), ())
        return CandleSlice(times[lo:hi].tolist(), s.frames[lo:hi])

    async def read_updates(self, series: Sequence[SeriesKey], after: int) -> list[Update]:
        runs: list[list[Update]] = []
        for key in series:
            s = self._series.get(key)
            if s is None:
                continue
            if s.trimmed_upto > after:
                raise DataExpired(f"updates of {key} after position {after} are no longer retained")
            runs.append(s.log[bisect_right(s.log_seqs, after) :])
        if len(runs) == 1:
            return runs[0]
        return list(heapq.merge(*runs, key=_by_seq))

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: int | None = None,
    ) -> Snapshot:
        position = self._seq if at is None or at > self._seq else at
        slices = [
            self._slice(key, history=history, start=start, closed_only=closed_only, at=position)
            for key in series
        ]
        return Snapshot(position, slices)

    def _slice(
        self, key: SeriesKey, *, history: int, start: int | None, closed_only: bool, at: int
    ) -> CandleSlice:
        s = self._series.get(key)
        if s is None:
            return CandleSlice((), ())
        # (open_time, closed, frame) of every retained candle as it was at `at`.
        rows = list(zip(s.open_times, s.closed, s.frames, strict=True))
        if at < self._seq and s.log_seqs and s.log_seqs[-1] > at:
            rows = self._rewind(key, s, rows, at)
        if start is not None:
            if s.evicted_seq > at and (not s.open_times or start < s.open_times[0]):
                raise DataExpired(f"history of {key} at position {at} is no longer retained")
            rows = rows[bisect_left([r[0] for r in rows], start) :]
        if closed_only:
            rows = [r for r in rows if r[1]]
        if start is None:
            if len(rows) < history and s.evicted_seq > at:
                raise DataExpired(f"history of {key} at position {at} is no longer retained")
            rows = rows[max(0, len(rows) - history) :] if history else []
        return CandleSlice([r[0] for r in rows], [r[2] for r in rows])

    @staticmethod
    def _rewind(
        key: SeriesKey, s: _Series, rows: list[tuple[int, int, bytes]], at: int
    ) -> list[tuple[int, int, bytes]]:
        """Replace candles changed after ``at`` by their version at ``at``."""
        if s.trimmed_upto > at:
            raise DataExpired(f"history of {key} at position {at} is no longer retained")
        cut = bisect_right(s.log_seqs, at)
        first_after: dict[int, int] = {}  # open_time -> first revision written after `at`
        for update in s.log[cut:]:
            first_after.setdefault(update.open_time, update.revision)
        previous: dict[int, Update] = {}
        wanted = {t: r - 1 for t, r in first_after.items() if r > 0}
        for update in reversed(s.log[:cut]):
            if wanted.get(update.open_time) == update.revision:
                previous[update.open_time] = update
                del wanted[update.open_time]
                if not wanted:
                    break
        if wanted:
            raise DataExpired(f"history of {key} at position {at} is no longer retained")
        rewound: list[tuple[int, int, bytes]] = []
        for row in rows:
            revision = first_after.get(row[0])
            if revision is None:
                rewound.append(row)
            elif revision > 0:
                old = previous[row[0]]
                rewound.append((row[0], old.closed, old.frame))
        return rewound
