"""Trades to OHLCV candles for one symbol, at several intervals at once.

:class:`SymbolAggregator` is pure: no I/O, no clock, no asyncio. Time only
moves through the event times of the trades it is given and through
:meth:`SymbolAggregator.advance` watermarks, so replaying a tape always gives
the same candles.

The contract, in short:

* A trade is bucketed by its event time. ``now`` is the largest event time
  seen (accepted trades and watermarks); a trade older than
  ``now - lateness`` when it arrives is dropped and counted.
* A candle ``[open_time, close_time)`` is closed once ``now >= close_time``.
* OHLCV is exact (``Decimal``), and so is the order flow: ``buy_volume``
  and ``buy_quote_volume`` sum the trades whose aggressor bought (a trade
  of unknown side counts in ``volume`` only). Open is the trade with the earliest event time
  (ties: earliest arrival), close the one with the latest (ties: latest
  arrival), so out-of-order trades inside the lateness window are exact.
* From the first trade on, the series is contiguous up to the bucket holding
  ``now``: a bucket without trades is a zero-volume candle at the previous
  close. When a new candle leaves a run of missing buckets next to it, only
  the most recent ``max_gap_fill`` of them are filled in.
* Every change to a candle (trades, closing, a new previous close for an
  empty candle) emits a full snapshot with the next revision (0, 1, 2, ...);
  each call emits a candle at most once, in its final state for that call.

How it is fast: trades are first folded into partial aggregates per *base
cell*, the longest span that never straddles a bucket boundary of any
configured interval (one second when ``1s`` is configured, one day for
``{3d, 1w}``), so the per-trade work does not depend on how many intervals
are configured. At the end of each call the few partials are merged into the
candles of every interval, and only then are frozen :class:`Candle` snapshots
built.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation, localcontext
from math import gcd

from candlewire.domain import NANOS_PER_SECOND, Candle, Interval, Side, Source, Trade
from candlewire.intervals import bucket_end, bucket_start, fixed_length

__all__ = ["AggregatorConfig", "SymbolAggregator"]

_DAY = 86_400 * NANOS_PER_SECOND
# Stands for "no time seen yet": below any event time a feed can produce.
_NEVER = -(1 << 256)
_ZERO = Decimal(0)
# Sums and products of trade prices and quantities never round in here.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation])


@dataclass(frozen=True, slots=True)
class AggregatorConfig:
    """What a :class:`SymbolAggregator` produces.

    ``intervals`` are the candle intervals to produce, in the order their
    candles are emitted. ``lateness`` (nanoseconds) is how far behind ``now``
    a trade may be and still be applied. ``max_gap_fill`` caps how many empty
    candles one gap produces per interval (the most recent ones are kept). A
    gap is the run of missing buckets between a new candle and the candle
    before it (or after it, when the new candle becomes the first), so one
    ``advance`` far ahead yields at most ``max_gap_fill`` closed empty candles
    plus the forming candle of the bucket holding ``now``.

    ``emit_limit`` (None: no limit) is for a consumer that keeps only the
    newest ``emit_limit`` candles of each series (a store's retention): a call
    then leaves out the candles it made final (closed, and beyond
    ``lateness``) that are older than the series' newest ``emit_limit``, which
    such a consumer would evict at once. A backfill of many short buckets (a
    day of 1s candles) then builds only what is kept. It must be at least the
    consumer's retention, or that consumer keeps an outdated version of a
    candle it was not sent the final version of.
    """

    intervals: tuple[Interval, ...]
    lateness: int = 0
    max_gap_fill: int = 10_000
    emit_limit: int | None = None

    def __post_init__(self) -> None:
        if len(set(self.intervals)) != len(self.intervals):
            raise ValueError(f"duplicate intervals in {self.intervals!r}")
        if self.lateness < 0:
            raise ValueError(f"lateness must be >= 0, got {self.lateness}")
        if self.max_gap_fill < 0:
            raise ValueError(f"max_gap_fill must be >= 0, got {self.max_gap_fill}")
        if self.emit_limit is not None and self.emit_limit < 1:
            raise ValueError(f"emit_limit must be >= 1, got {self.emit_limit}")


class _Partial:
    """Trades of one call that fall into one base cell, aggregated."""

    __slots__ = (
        "buy",
        "buy_quote",
        "close",
        "close_t",
        "count",
        "high",
        "low",
        "open",
        "open_t",
        "quote",
        "seq",
        "source",
        "volume",
    )

    def __init__(
        self, time: int, price: Decimal, quantity: Decimal, seq: int, source: Source, side: Side
    ):
        self.open_t = time
        self.open = price
        self.close_t = time
        self.close = price
        self.high = price
        self.low = price
        self.volume = quantity
        self.quote = price * quantity
        if side is Side.BUY:
            self.buy = quantity
            self.buy_quote = self.quote
        else:
            self.buy = self.buy_quote = _ZERO
        self.count = 1
        self.seq = seq  # arrival number of the last trade
        self.source = source  # source of the last trade

    def copy(self) -> _Partial:
        """A copy that can absorb other partials without changing this one."""
        other = _Partial.__new__(_Partial)
        other.open_t = self.open_t
        other.open = self.open
        other.close_t = self.close_t
        other.close = self.close
        other.high = self.high
        other.low = self.low
        other.volume = self.volume
        other.quote = self.quote
        other.buy = self.buy
        other.buy_quote = self.buy_quote
        other.count = self.count
        other.seq = self.seq
        other.source = self.source
        return other

    def absorb(self, other: _Partial) -> None:
        """Add the trades of ``other``, from the same call and another base cell."""
        if other.open_t < self.open_t:
            self.open_t = other.open_t
            self.open = other.open
        if other.close_t > self.close_t:
            self.close_t = other.close_t
            self.close = other.close
        if other.high > self.high:
            self.high = other.high
        if other.low < self.low:
            self.low = other.low
        self.volume += other.volume
        self.quote += other.quote
        self.buy += other.buy
        self.buy_quote += other.buy_quote
        self.count += other.count
        if other.seq > self.seq:
            self.seq = other.seq
            self.source = other.source


class _Candle:
    """Mutable state of one candle; ``count == 0`` means empty."""

    __slots__ = (
        "buy",
        "buy_quote",
        "close",
        "close_t",
        "close_time",
        "closed",
        "count",
        "dirty",
        "high",
        "low",
        "open",
        "open_t",
        "open_time",
        "quote",
        "revision",
        "source",
        "src_seq",
        "volume",
    )

    def __init__(self, open_time: int, close_time: int, source: Source) -> None:
        self.open_time = open_time
        self.close_time = close_time
        self.open = _ZERO
        self.high = _ZERO
        self.low = _ZERO
        self.close = _ZERO
        self.volume = _ZERO
        self.quote = _ZERO
        self.buy = _ZERO
        self.buy_quote = _ZERO
        self.count = 0
        self.open_t = 0  # event time of the opening trade
        self.close_t = 0  # event time of the closing trade
        self.source = source
        self.src_seq = -1  # arrival number of the last trade applied
        self.closed = False
        self.revision = -1  # last emitted revision
        self.dirty = True

    def merge(self, part: _Partial) -> None:
        """Apply the trades of ``part``, which arrived after all trades applied so far."""
        if self.count == 0:
            self.open_t = part.open_t
            self.open = part.open
            self.close_t = part.close_t
            self.close = part.close
            self.high = part.high
            self.low = part.low
            self.volume = part.volume
            self.quote = part.quote
            self.buy = part.buy
            self.buy_quote = part.buy_quote
            self.count = part.count
            self.source = part.source
            self.src_seq = part.seq
        else:
            # Ties in event time go to the earlier arrival for the open and to
            # the later one for the close. Partials of one call never tie with
            # each other (distinct base cells), and arrive after earlier calls.
            if part.open_t < self.open_t:
                self.open_t = part.open_t
                self.open = part.open
            if part.close_t >= self.close_t:
                self.close_t = part.close_t
                self.close = part.close
            if part.high > self.high:
                self.high = part.high
            if part.low < self.low:
                self.low = part.low
            self.volume += part.volume
            self.quote += part.quote
            self.buy += part.buy
            self.buy_quote += part.buy_quote
            self.count += part.count
            if part.seq > self.src_seq:
                self.source = part.source
                self.src_seq = part.seq
        self.dirty = True


class _Series:
    """The retained candles of one interval, by open time."""

    __slots__ = (
        "candles",
        "cur_end",
        "cur_start",
        "evicted_close",
        "evicted_end",
        "interval",
        "keys",
        "length",
        "skip_gap",
    )

    def __init__(self, interval: Interval) -> None:
        self.interval = interval
        self.length = fixed_length(interval)
        self.keys: list[int] = []  # open times of the retained candles, ascending
        self.candles: dict[int, _Candle] = {}
        # The last candle dropped from memory: its end and close.
        self.evicted_end: int | None = None
        self.evicted_close: Decimal | None = None
        # Bounds of the last bucket looked up, to skip bucket_start.
        self.cur_start = 0
        self.cur_end = 0
        # The next candle created leaves the gap before it empty (see skip_gap).
        self.skip_gap = False

    def bucket(self, time: int) -> tuple[int, int]:
        """``(open_time, close_time)`` of the bucket holding ``time``."""
        if not self.cur_start <= time < self.cur_end:
            start = bucket_start(self.interval, time)
            self.cur_start = start
            self.cur_end = bucket_end(self.interval, start)
        return self.cur_start, self.cur_end

    def group(self, parts: list[_Partial]) -> list[tuple[int, int, _Partial]]:
        """``(open_time, close_time, aggregate)`` per bucket of ``parts`` (ascending)."""
        groups: list[tuple[int, int, _Partial]] = []
        last_start: int | None = None
        shared = True  # the last aggregate is one of ``parts``; copy before absorbing
        for part in parts:
            start, end = self.bucket(part.open_t)
            if start != last_start:
                groups.append((start, end, part))
                last_start = start
                shared = True
                continue
            total = groups[-1][2]
            if shared:
                total = total.copy()
                groups[-1] = (start, end, total)
                shared = False
            total.absorb(part)
        return groups

    def end_of(self, start: int) -> int:
        length = self.length
        return start + length if length is not None else bucket_end(self.interval, start)

    def last_starts(self, low: int, high: int, cap: int) -> list[int]:
        """The last ``cap`` bucket starts in ``[low, high)`` (both aligned), ascending."""
        if cap <= 0 or low >= high:
            return []
        length = self.length
        if length is not None:
            first = max(low, high - cap * length)
            return list(range(first, high, length))
        starts: list[int] = []
        current = high
        while len(starts) < cap:
            current = bucket_start(self.interval, current - 1)
            if current < low:
                break
            starts.append(current)
        starts.reverse()
        return starts


def _offset(interval: Interval, length: int) -> int:
    return bucket_start(interval, 0) % length


def _nests(fine: Interval, coarse: Interval) -> bool:
    """Whether every bucket boundary of ``coarse`` is one of ``fine``."""
    fine_length = fixed_length(fine)
    if fine_length is None:
        return False
    fine_offset = _offset(fine, fine_length)
    coarse_length = fixed_length(coarse)
    if coarse_length is None:  # months start at midnight
        return _DAY % fine_length == 0 and fine_offset == 0
    coarse_offset = _offset(coarse, coarse_length)
    return coarse_length % fine_length == 0 and (coarse_offset - fine_offset) % fine_length == 0


def _roll_up_plan(intervals: tuple[Interval, ...]) -> list[tuple[int, int]]:
    """``(interval index, source step)`` in the order partials are rolled up.

    Intervals go from short to long; each one is grouped from the groups of
    the last (so longest) earlier step that nests in it, or from the base
    partials (source step -1).
    """
    order = sorted(range(len(intervals)), key=lambda i: fixed_length(intervals[i]) or _DAY * 366)
    plan: list[tuple[int, int]] = []
    for index in order:
        source = -1
        for step, (earlier, _) in enumerate(plan):
            if _nests(intervals[earlier], intervals[index]):
                source = step
        plan.append((index, source))
    return plan


def _base_cell(intervals: Iterable[Interval]) -> int:
    """Longest span whose aligned cells never straddle a bucket boundary."""
    base = 0
    for interval in intervals:
        length = fixed_length(interval)
        # Calendar months start at midnight; the others at offset + n * length.
        grid = (_DAY,) if length is None else (length, _offset(interval, length))
        base = gcd(base, *grid)
    return base or NANOS_PER_SECOND


class SymbolAggregator:
    """Builds the candles of one symbol from its trades, at every configured interval.

    Feed it trades with :meth:`add_trades` and watermarks with :meth:`advance`;
    both return the candles that changed, as full snapshots ordered by
    interval (config order), then open time. See the module docstring for the
    exact semantics.
    """

    __slots__ = (
        "_base",
        "_cap",
        "_dropped",
        "_emit_limit",
        "_lateness",
        "_now",
        "_plan",
        "_seq",
        "_series",
        "_source",
        "_symbol",
    )

    def __init__(self, symbol: str, config: AggregatorConfig, source: Source) -> None:
        self._symbol = symbol
        self._source = source
        self._lateness = config.lateness
        self._cap = config.max_gap_fill
        self._emit_limit = config.emit_limit
        self._base = _base_cell(config.intervals)
        self._series = [_Series(interval) for interval in config.intervals]
        self._plan = _roll_up_plan(config.intervals)
        self._now = _NEVER
        self._seq = 0  # arrival number of the last accepted trade
        self._dropped = 0

    @property
    def now(self) -> int | None:
        """The largest event time seen (accepted trades and watermarks), or None."""
        return None if self._now == _NEVER else self._now

    @property
    def dropped_late(self) -> int:
        """How many trades were dropped for arriving more than ``lateness`` behind ``now``."""
        return self._dropped

    def add_trades(self, trades: Iterable[Trade]) -> list[Candle]:
        """Apply ``trades`` in order; return the candles that changed.

        A trade with ``time < now - lateness`` (``now`` as it was just before
        that trade) is dropped and counted in :attr:`dropped_late`.

        Raises:
            ValueError: a trade is for another symbol. Nothing of the call is
                applied then.
        """
        symbol = self._symbol
        lateness = self._lateness
        base = self._base
        now = self._now
        limit = now - lateness
        seq = self._seq
        dropped = 0
        parts: dict[int, _Partial] = {}
        key: int | None = None
        part: _Partial
        with localcontext(_EXACT):
            for trade in trades:
                if trade.symbol != symbol:
                    raise ValueError(
                        f"trade for {trade.symbol!r} given to the {symbol!r} aggregator"
                    )
                time = trade.time
                if time < limit:
                    dropped += 1
                    continue
                if time > now:
                    now = time
                    limit = time - lateness
                seq += 1
                price = trade.price
                quantity = trade.quantity
                cell = time // base
                if cell != key:
                    key = cell
                    found = parts.get(cell)
                    if found is None:
                        part = parts[cell] = _Partial(
                            time, price, quantity, seq, trade.source, trade.side
                        )
                        continue
                    part = found
                if time < part.open_t:
                    part.open_t = time
                    part.open = price
                if time >= part.close_t:
                    part.close_t = time
                    part.close = price
                if price > part.high:
                    part.high = price
                elif price < part.low:
                    part.low = price
                part.volume += quantity
                notional = price * quantity
                part.quote += notional
                if trade.side is Side.BUY:
                    part.buy += quantity
                    part.buy_quote += notional
                part.count += 1
                part.seq = seq
                part.source = trade.source
            self._dropped += dropped
            self._seq = seq
            if not parts:  # only dropped trades: nothing moved
                return []
            self._now = now
            return self._finish([parts[cell] for cell in sorted(parts)])

    def skip_gap(self) -> None:
        """The market closed: the buckets between the candles before and after the
        closure stay empty (no zero-volume candles), so a closed market is a gap in
        the series, not a quiet one. Applies to the next candle each interval creates;
        the candle forming at the closure closes when the next trade or watermark
        passes its end.
        """
        for series in self._series:
            series.skip_gap = True

    def advance(self, time: int) -> list[Candle]:
        """Move ``now`` to ``time`` (a watermark); return the candles that changed.

        Closes the candles that end at or before ``time``, fills the buckets
        passed without trades with empty candles and opens the (empty) candle
        of the bucket holding ``time``. A ``time`` at or before ``now`` changes
        nothing. Before the first trade only ``now`` moves.
        """
        if time <= self._now:
            return []
        self._now = time
        if self._seq == 0:
            return []
        with localcontext(_EXACT):
            return self._finish([])

    def _finish(self, parts: list[_Partial]) -> list[Candle]:
        """Merge ``parts`` (ascending) into every series, then close, fill, emit and evict.

        ``parts`` are rolled up interval by interval (see :func:`_roll_up_plan`),
        so each interval merges one aggregate per bucket touched.
        """
        outs: list[list[Candle]] = [[] for _ in self._series]
        steps: list[list[_Partial]] = []
        for index, source in self._plan:
            series = self._series[index]
            groups = series.group(parts if source < 0 else steps[source])
            steps.append([group[2] for group in groups])
            self._finish_series(series, groups, outs[index])
        if len(outs) == 1:
            return outs[0]
        return [candle for out in outs for candle in out]

    def _finish_series(
        self, series: _Series, groups: list[tuple[int, int, _Partial]], out: list[Candle]
    ) -> None:
        keys = series.keys
        candles = series.candles
        now = self._now
        # Smallest open time that may have changed: the old forming candle
        # (it may close now) or anything created or traded into below.
        low = keys[-1] if keys else None
        for start, end, part in groups:
            candle = candles.get(start)
            if candle is None:
                first = self._create(series, start, end)
                candle = candles[start]
                if low is None or first < low:
                    low = first
            elif low is None or start < low:
                low = start
            candle.merge(part)
        if low is None:  # series not started (cannot happen once a trade was accepted)
            return
        if now >= candles[keys[-1]].close_time:
            start, end = series.bucket(now)
            first = self._create(series, start, end)
            if first < low:
                low = first

        index = bisect_left(keys, low)
        previous = candles[keys[index - 1]].close if index else series.evicted_close
        symbol = self._symbol
        interval = series.interval
        horizon = now - self._lateness
        limit = self._emit_limit
        # Final candles opening before `kept` are left out (see AggregatorConfig.emit_limit).
        kept = keys[-limit] if limit is not None and len(keys) > limit else None
        for key in keys[index:]:
            candle = candles[key]
            if candle.count:
                previous = candle.close
            elif previous is not None and (candle.revision < 0 or candle.close != previous):
                candle.open = candle.high = candle.low = candle.close = previous
                candle.dirty = True
            if not candle.closed and now >= candle.close_time:
                candle.closed = True
                candle.dirty = True
            if candle.dirty:
                candle.dirty = False
                candle.revision += 1
                if kept is not None and key < kept and candle.close_time <= horizon:
                    continue  # final, and older than what the consumer keeps
                out.append(
                    Candle(
                        symbol,
                        interval,
                        key,
                        candle.close_time,
                        candle.open,
                        candle.high,
                        candle.low,
                        candle.close,
                        candle.volume,
                        candle.quote,
                        candle.count,
                        candle.closed,
                        candle.revision,
                        candle.source,
                        candle.buy,
                        candle.buy_quote,
                    )
                )

        # Drop the candles no accepted trade can reach any more.
        gone = 0
        while candles[keys[gone]].close_time <= horizon:  # the forming candle always stays
            gone += 1
        if gone:
            last = candles[keys[gone - 1]]
            series.evicted_end = last.close_time
            series.evicted_close = last.close
            for key in keys[:gone]:
                del candles[key]
            del keys[:gone]

    def _create(self, series: _Series, start: int, end: int) -> int:
        """Add the candle ``[start, end)`` and the empty ones of the gap it opens.

        The gap is the run of missing buckets between the new candle and the
        nearest candle before it (retained or evicted) or, when it becomes the
        first candle of the series, after it; only its last ``max_gap_fill``
        buckets get empty candles. Returns the smallest open time created.
        """
        keys = series.keys
        candles = series.candles
        source = self._source
        index = bisect_left(keys, start)
        cap = 0 if series.skip_gap else self._cap
        series.skip_gap = False
        if index:
            fills = series.last_starts(candles[keys[index - 1]].close_time, start, cap)
            created = [*fills, start]
        elif series.evicted_end is not None:
            fills = series.last_starts(series.evicted_end, start, cap)
            created = [*fills, start]
        elif keys:
            fills = series.last_starts(end, keys[0], self._cap)
            created = [start, *fills]
        else:
            fills = []
            created = [start]
        for fill in fills:
            candles[fill] = _Candle(fill, series.end_of(fill), source)
        candles[start] = _Candle(start, end, source)
        keys[index:index] = created
        return created[0]
