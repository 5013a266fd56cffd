"""The in-memory store: the embedded default.

Per series, candles live in arrays sorted by open time (open time, revision,
closed flag, frame length) and their encoded frames lie back to back in one
``bytearray``, capped at ``retention``: no Python object per candle, so a
stored candle costs its frame plus 15 bytes. Responses are slices of that
buffer (:class:`~candlewire.codec.FrameRun`).

The update log keeps the last ``log_size`` updates per series, in arrays as
well. An entry whose version is still the stored one shares the stored frame
(``None`` in ``log_frames``); when that candle is replaced or evicted, the
entry gets its own copy first. So there is at most one shared entry per open
time, and it is always the stored version.

One counter numbers the updates of every series (a global order is a valid
per-symbol order), so a position ``{symbol: seq}`` is checked per symbol.

Trades are kept per symbol in arrays as well (:class:`_Tape`): their marks
and their frames, numbered from ``first``; the oldest are evicted beyond
``trade_retention`` trades or ``trade_window`` nanoseconds behind the newest
mark. A tape is its own update log: trades never change.

Every method completes without awaiting, so each call is atomic with respect
to the others.
"""

from __future__ import annotations

import heapq
import os
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from itertools import accumulate
from operator import attrgetter

from candlewire.codec import FrameRun, candle_frame, trade_frame
from candlewire.domain import Candle, Interval, Quote, SeriesKey, Trade
from candlewire.errors import DataExpired
from candlewire.store.base import (
    CandleSlice,
    Position,
    Snapshot,
    TradeSlice,
    TradeSymbol,
    TradeUpdate,
    Update,
)

__all__ = ["MemoryStore"]

_by_seq = attrgetter("seq")
_RECENT = 16  # log entries searched backwards before a full scan


def _copy(buf: bytearray, start: int, end: int) -> bytes:
    with memoryview(buf) as view:
        return view[start:end].tobytes()


class _Series:
    __slots__ = (
        "buf",
        "closed",
        "evicted_seq",
        "key",
        "lengths",
        "log_closed",
        "log_frames",
        "log_revisions",
        "log_seqs",
        "log_times",
        "open_times",
        "revisions",
        "trimmed_upto",
    )

    def __init__(self, key: SeriesKey) -> None:
        self.key = key
        self.open_times = array("q")
        self.revisions = array("I")
        self.closed = array("b")
        self.lengths = array("H")  # widened to "I" if a frame ever exceeds 64 KiB
        self.buf = bytearray()
        self.log_seqs = array("q")
        self.log_times = array("q")
        self.log_revisions = array("I")
        self.log_closed = array("b")
        self.log_frames: list[bytes | None] = []
        self.trimmed_upto = 0  # every update with seq <= this may be gone from the log
        self.evicted_seq = 0  # seq of the last write that evicted a candle

    def offset(self, index: int) -> int:
        """Where candle ``index``'s frame starts in ``buf`` (summed from the nearer end)."""
        lengths = self.lengths
        if index > len(lengths) // 2:
            return len(self.buf) - sum(lengths[index:])
        return sum(lengths[:index])

    def frame(self, index: int) -> bytes:
        start = self.offset(index)
        return _copy(self.buf, start, start + self.lengths[index])

    def frames(self, indices: Sequence[int]) -> list[bytes]:
        if len(indices) <= 8:
            return [self.frame(i) for i in indices]
        ends = list(accumulate(self.lengths))
        lengths, buf = self.lengths, self.buf
        return [_copy(buf, ends[i] - lengths[i], ends[i]) for i in indices]

    def run(self, lo: int, hi: int) -> FrameRun:
        """Candles ``lo`` to ``hi`` (exclusive) as one slice of the buffer."""
        if lo >= hi:
            return FrameRun(b"", ())
        lengths = self.lengths[lo:hi]
        start = self.offset(lo)
        return FrameRun(_copy(self.buf, start, start + sum(lengths)), lengths)

    def log_frame(self, k: int) -> bytes:
        """The frame of log entry ``k``."""
        frame = self.log_frames[k]
        if frame is None:  # the stored version of its candle
            index = bisect_left(self.open_times, self.log_times[k])
            frame = self.frame(index)
        return frame

    def detach(self, index: int) -> None:
        """Give the log entry sharing candle ``index``'s frame (if any) its own copy."""
        open_time = self.open_times[index]
        times, frames = self.log_times, self.log_frames
        k = len(times) - 1
        stop = max(-1, k - _RECENT)
        while k > stop:
            if times[k] == open_time and frames[k] is None:
                frames[k] = self.frame(index)
                return
            k -= 1
        k = 0
        while True:
            try:
                k = times.index(open_time, k)
            except ValueError:
                return
            if frames[k] is None:
                frames[k] = self.frame(index)
                return
            k += 1


class _Tape:
    """The retained trades of one symbol: trade ``first + i`` is index ``i``."""

    __slots__ = ("evicted_mark", "first", "frames", "key", "mark", "marks")

    def __init__(self, symbol: str) -> None:
        self.key = TradeSymbol(symbol)
        self.first = 1
        self.marks = array("q")
        self.frames: list[bytes] = []
        self.mark: int | None = None  # the newest mark
        self.evicted_mark: int | None = None  # the mark of the newest evicted trade

    @property
    def head(self) -> int:
        return self.first + len(self.frames) - 1

    def evict(self, retention: int, window: int | None) -> None:
        n = len(self.frames)
        cut = max(0, n - retention)
        if window is not None and self.mark is not None:
            cut = max(cut, bisect_left(self.marks, self.mark - window))
        if cut:
            self.evicted_mark = self.marks[cut - 1]
            del self.marks[:cut], self.frames[:cut]
            self.first += cut

    def complete_from(self, after: int, start: int | None) -> bool:
        """Whether every trade after ``after`` (with mark >= ``start``) is retained."""
        if after + 1 >= self.first:
            return True
        return start is not None and (self.evicted_mark is None or self.evicted_mark < start)


class MemoryStore:
    """Implements :class:`~candlewire.store.base.Store` in process memory."""

    def __init__(
        self,
        *,
        retention: int = 5000,
        log_size: int = 4096,
        ticks: int = 100,
        trade_retention: int = 100_000,
        trade_window: int | None = None,
    ) -> None:
        if retention < 1 or log_size < 1 or ticks < 1 or trade_retention < 1:
            raise ValueError("retention, log_size, ticks and trade_retention must be positive")
        if trade_window is not None and trade_window <= 0:
            raise ValueError("trade_window must be positive")
        self._trade_retention = trade_retention
        self._trade_window = trade_window
        self._tapes: dict[str, _Tape] = {}
        self._retention = retention
        self._log_size = log_size
        self._series: dict[SeriesKey, _Series] = {}
        self._quotes: dict[str, Quote] = {}
        self._ticks_kept = ticks
        self._ticks: dict[str, deque[Quote]] = {}
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
            ticks = self._ticks.get(quote.symbol)
            if ticks is None:
                ticks = self._ticks[quote.symbol] = deque(maxlen=self._ticks_kept)
            ticks.append(quote)

    async def recent_ticks(self, symbol: str, limit: int) -> list[Quote]:
        ticks = self._ticks.get(symbol)
        if not ticks or limit <= 0:
            return []
        return list(ticks)[-limit:]

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        return [self._quotes.get(symbol) for symbol in symbols]

    async def head(self, symbols: Sequence[str]) -> dict[str, int]:
        return dict.fromkeys(symbols, self._seq)

    def _cutoffs(self, candles: Sequence[Candle]) -> dict[SeriesKey, int]:
        """For a batch larger than the retention (a backfill), the oldest open
        time per series that survives the batch: older candles are skipped
        instead of being encoded and evicted again."""
        times: dict[tuple[str, Interval], set[int]] = {}
        symbol: str | None = None
        interval: Interval | None = None
        run: set[int] = set()
        for candle in candles:
            if candle.interval is not interval or candle.symbol != symbol:
                symbol, interval = candle.symbol, candle.interval
                run = times.setdefault((symbol, interval), set())
            run.add(candle.open_time)
        cutoffs: dict[SeriesKey, int] = {}
        for (name, length), new in times.items():
            key = SeriesKey(name, length)
            s = self._series.get(key)
            if s is not None:
                new.update(s.open_times)
            if len(new) > self._retention:
                cutoffs[key] = sorted(new)[-self._retention]
        return cutoffs

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        applied: list[Update] = []
        cutoffs = self._cutoffs(candles) if len(candles) > self._retention else {}
        retention = self._retention
        key: SeriesKey | None = None
        s = _Series(SeriesKey("", Interval.S1))
        cutoff: int | None = None
        for candle in candles:
            if key is None or candle.interval is not key.interval or candle.symbol != key.symbol:
                key = candle.series  # batches come grouped by series: build keys once a run
                found = self._series.get(key)
                if found is None:
                    found = self._series[key] = _Series(key)
                s = found
                cutoff = cutoffs.get(key) if cutoffs else None
            open_time = candle.open_time
            if cutoff is not None and open_time < cutoff:
                continue
            times = s.open_times
            n = len(times)
            if n and times[n - 1] == open_time:  # the forming candle: the usual write
                i, exists = n - 1, True
            elif not n or times[n - 1] < open_time:
                i, exists = n, False
            else:
                i = bisect_left(times, open_time)
                exists = i < n and times[i] == open_time
            if exists and candle.revision <= s.revisions[i]:
                continue
            if not exists and i == 0 and n >= retention:
                continue  # older than everything retained: it would be evicted at once
            frame = candle_frame(candle)
            size = len(frame)
            if size > 0xFFFF and s.lengths.typecode == "H":
                s.lengths = array("I", s.lengths)
            self._seq += 1
            if exists:
                s.detach(i)
                start = s.offset(i)
                s.buf[start : start + s.lengths[i]] = frame
                s.lengths[i] = size
                s.revisions[i] = candle.revision
                s.closed[i] = candle.closed
            else:
                if i == n:
                    s.buf += frame
                else:
                    start = s.offset(i)
                    s.buf[start:start] = frame
                times.insert(i, open_time)
                s.lengths.insert(i, size)
                s.revisions.insert(i, candle.revision)
                s.closed.insert(i, candle.closed)
                if n + 1 > retention:
                    excess = n + 1 - retention
                    for j in range(excess):
                        s.detach(j)
                    del s.buf[: sum(s.lengths[:excess])]
                    del times[:excess], s.lengths[:excess], s.revisions[:excess]
                    del s.closed[:excess]
                    s.evicted_seq = self._seq
            s.log_seqs.append(self._seq)
            s.log_times.append(open_time)
            s.log_revisions.append(candle.revision)
            s.log_closed.append(candle.closed)
            s.log_frames.append(None)
            if len(s.log_seqs) >= 2 * self._log_size:
                cut = len(s.log_seqs) - self._log_size
                s.trimmed_upto = s.log_seqs[cut - 1]
                del s.log_seqs[:cut], s.log_times[:cut], s.log_revisions[:cut]
                del s.log_closed[:cut], s.log_frames[:cut]
            applied.append(Update(self._seq, key, open_time, candle.revision, candle.closed, frame))
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
        return CandleSlice(times[lo:hi], s.run(lo, hi))  # an array: no int objects

    def _check_position(self, series: Sequence[SeriesKey], position: Position) -> None:
        """A position ahead of every number given is impossible here (a
        forged token, or one of another store): refused as no longer held."""
        for key in series:
            seq = position.get(key.symbol, 0)
            if seq > self._seq:
                raise DataExpired(f"{key.symbol} has no position {seq}")

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        self._check_position(series, after)
        runs: list[list[Update]] = []
        for key in series:
            s = self._series.get(key)
            if s is None:
                continue
            seq = after.get(key.symbol, 0)
            if s.trimmed_upto > seq:
                raise DataExpired(f"updates of {key} after position {seq} are no longer retained")
            first = bisect_right(s.log_seqs, seq)
            runs.append(
                [
                    Update(
                        s.log_seqs[k],
                        key,
                        s.log_times[k],
                        s.log_revisions[k],
                        bool(s.log_closed[k]),
                        s.log_frame(k),
                    )
                    for k in range(first, len(s.log_seqs))
                ]
            )
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
        at: Position | None = None,
    ) -> Snapshot:
        seq = self._seq
        if at is not None:
            self._check_position(series, at)
        position = {key.symbol: seq if at is None else at.get(key.symbol, 0) for key in series}
        slices = [
            self._slice(
                key, history=history, start=start, closed_only=closed_only, at=position[key.symbol]
            )
            for key in series
        ]
        return Snapshot(position, slices)

    def _slice(
        self, key: SeriesKey, *, history: int, start: int | None, closed_only: bool, at: int
    ) -> CandleSlice:
        s = self._series.get(key)
        if s is None:
            return CandleSlice((), ())
        if at < self._seq and s.log_seqs and s.log_seqs[-1] > at:
            return self._rewound_slice(
                key, s, history=history, start=start, closed_only=closed_only, at=at
            )
        # The stored candles are the candles at `at`: work on indices, copy
        # only the frames returned.
        times = s.open_times
        n = len(times)
        lo = 0
        if start is not None:
            if s.evicted_seq > at and (not times or start < times[0]):
                raise DataExpired(f"history of {key} at position {at} is no longer retained")
            lo = bisect_left(times, start)
        if not closed_only:
            if start is None:
                if n < history and s.evicted_seq > at:
                    raise DataExpired(f"history of {key} at position {at} is no longer retained")
                lo = max(0, n - history) if history else n
            return CandleSlice(times[lo:].tolist(), s.run(lo, n))
        closed = s.closed
        if start is not None:
            picked = [i for i in range(lo, n) if closed[i]]
        else:
            picked = []
            if history:
                for i in range(n - 1, -1, -1):
                    if closed[i]:
                        picked.append(i)
                        if len(picked) == history:
                            break
                picked.reverse()
            if len(picked) < history and s.evicted_seq > at:
                raise DataExpired(f"history of {key} at position {at} is no longer retained")
        return CandleSlice([times[i] for i in picked], s.frames(picked))

    def _rewound_slice(
        self,
        key: SeriesKey,
        s: _Series,
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: int,
    ) -> CandleSlice:
        # (open_time, closed, frame) of every retained candle as it was at `at`.
        rows = list(zip(s.open_times, s.closed, s.frames(range(len(s.open_times))), strict=True))
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
        log_times, log_revisions = s.log_times, s.log_revisions
        first_after: dict[int, int] = {}  # open_time -> first revision written after `at`
        for k in range(cut, len(log_times)):
            first_after.setdefault(log_times[k], log_revisions[k])
        previous: dict[int, tuple[int, bytes]] = {}  # open_time -> (closed, frame) at `at`
        wanted = {t: r - 1 for t, r in first_after.items() if r > 0}
        for k in range(cut - 1, -1, -1):
            if not wanted:
                break
            open_time = log_times[k]
            if wanted.get(open_time) == log_revisions[k]:
                previous[open_time] = (s.log_closed[k], s.log_frame(k))
                del wanted[open_time]
        if wanted:
            raise DataExpired(f"history of {key} at position {at} is no longer retained")
        rewound: list[tuple[int, int, bytes]] = []
        for row in rows:
            revision = first_after.get(row[0])
            if revision is None:
                rewound.append(row)
            elif revision > 0:
                closed, frame = previous[row[0]]
                rewound.append((row[0], closed, frame))
        return rewound

    # --- trades -------------------------------------------------------------------------

    async def write_trades(self, trades: Sequence[Trade]) -> list[TradeUpdate]:
        out: list[TradeUpdate] = []
        touched: set[_Tape] = set()
        tape: _Tape | None = None
        for trade in trades:
            if tape is None or tape.key.symbol != trade.symbol:
                tape = self._tapes.get(trade.symbol)
                if tape is None:
                    tape = self._tapes[trade.symbol] = _Tape(trade.symbol)
                touched.add(tape)
            mark = trade.time if tape.mark is None or trade.time > tape.mark else tape.mark
            tape.mark = mark
            frame = trade_frame(trade)
            tape.marks.append(mark)
            tape.frames.append(frame)
            out.append(TradeUpdate(tape.head, tape.key, mark, frame))
        for tape in touched:
            tape.evict(self._trade_retention, self._trade_window)
        return out

    async def trade_heads(self, symbols: Sequence[str]) -> dict[str, int]:
        heads: dict[str, int] = {}
        for symbol in symbols:
            tape = self._tapes.get(symbol)
            heads[symbol] = 0 if tape is None else tape.head
        return heads

    async def get_trades(
        self,
        symbol: str,
        *,
        start: int | None = None,
        end: int | None = None,
        after: int = 0,
        upto: int | None = None,
        limit: int,
        latest: bool = False,
    ) -> TradeSlice:
        tape = self._tapes.get(symbol)
        if tape is None:
            return TradeSlice((), (), True)
        first, marks = tape.first, tape.marks
        lo = max(0, after + 1 - first)
        hi = len(marks) if upto is None else max(0, min(len(marks), upto + 1 - first))
        if start is not None:
            lo = max(lo, bisect_left(marks, start))
        if end is not None:
            hi = min(hi, bisect_left(marks, end))
        complete = tape.complete_from(after, start)
        if latest:
            if hi - lo >= limit:
                complete = True  # the newest `limit` are all retained
            lo = max(lo, hi - max(0, limit))
        else:
            hi = min(hi, lo + max(0, limit))
        if lo >= hi:
            return TradeSlice((), (), complete)
        return TradeSlice(range(first + lo, first + hi), tape.frames[lo:hi], complete)

    async def read_trades(self, symbols: Sequence[str], after: Position) -> list[TradeUpdate]:
        out: list[TradeUpdate] = []
        for symbol in symbols:
            tape = self._tapes.get(symbol)
            if tape is None:
                continue
            seq = after.get(symbol, 0)
            if seq >= tape.head:
                continue
            if not tape.complete_from(seq, None):
                raise DataExpired(f"trades of {symbol} after {seq} are no longer retained")
            first, key, marks, frames = tape.first, tape.key, tape.marks, tape.frames
            out.extend(
                TradeUpdate(first + i, key, marks[i], frames[i])
                for i in range(seq + 1 - first, len(frames))
            )
        return out
