"""Loading history: data.binance.vision files, Binance REST backfill, roll-ups.

- :func:`import_files` reads kline files (each row one closed candle) and
  trade files (aggregated by the service's own
  :class:`~candlewire.aggregate.SymbolAggregator` into every requested
  interval whose candles the file's period holds whole) with the replay
  feed's parsers, and loads them with binary ``COPY``. A file is parsed whole
  before anything of it is written, and written in one transaction: a
  malformed file is reported with its name and line and leaves nothing behind.
- :func:`backfill` fetches the klines the history store is missing over
  Binance's REST API, with the live feed's client (request-weight accounting,
  ``429`` ``Retry-After``, ``418`` bans) at its own share of the weight limit.
  What is stored is never fetched again, so a second run resumes.
- :func:`derive` rolls stored candles of a finer interval up into a coarser
  one, only for buckets whose finer candles are all stored: open of the
  first that traded, close of the last, high and low of those that traded,
  sums of volume, quote volume and trades, in exact decimals, which is how
  Binance builds its own klines from the same trades.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import multiprocessing
import os
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO

from candlewire.aggregate import AggregatorConfig, SymbolAggregator, _nests
from candlewire.codec import candle_frame, frame_to_candle, kline_framer
from candlewire.domain import NANOS_PER_MILLI, Candle, Interval, SeriesKey, Source, Trade
from candlewire.errors import (
    CandlewireError,
    ConfigError,
    DependencyUnavailable,
    HistoryUnavailable,
)
from candlewire.feeds.replay import _MICROS_FROM, ReplayFile, _events, _open_text
from candlewire.history.blocks import Block, block_length, block_of, encode_blocks
from candlewire.history.postgres import HistoryRow, HistoryStore, group_rows
from candlewire.intervals import bucket_end, bucket_start, buckets, fixed_length
from candlewire.retry import Backoff, Retry

if TYPE_CHECKING:  # the REST client is imported where it is used
    from candlewire.feeds.binance.http import BinanceHttp

__all__ = [
    "ImportFailed",
    "LoadReport",
    "Progress",
    "backfill",
    "derive",
    "import_files",
    "kline_file_rows",
    "roll_up",
    "trade_file_rows",
]

log = logging.getLogger(__name__)


class ImportFailed(CandlewireError):
    """A file could not be imported; nothing of it was written."""


@dataclass
class LoadReport:
    files: int = 0
    candles: int = 0
    requests: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.candles / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """Candles done of a total, with rate and ETA: a bar redrawn in place on a
    terminal, a log line every ``every`` seconds otherwise."""

    def __init__(
        self,
        what: str,
        total: int = 0,
        *,
        stream: TextIO | None = None,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self._stream = stream
        self._tty = stream is not None and stream.isatty()
        self._every = every
        self._clock = clock
        self._started = clock()
        self._shown = self._started

    def add_total(self, count: int) -> None:
        self.total += count

    def advance(self, count: int) -> None:
        self.done += count
        now = self._clock()
        if self._tty or now - self._shown >= self._every:
            self._shown = now
            self._show(now)

    def line(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        total = max(self.total, self.done)
        left = (total - self.done) / rate if rate > 0 else float("inf")
        eta = "?" if left == float("inf") else f"{int(left) // 60}m{int(left) % 60:02d}s"
        share = self.done / total if total else 1.0
        return f"{self.what}: {self.done:,}/{total:,} candles ({share:.0%}) {rate:,.0f}/s ETA {eta}"

    def _show(self, now: float) -> None:
        text = self.line(now)
        if self._tty and self._stream is not None:
            total = max(self.total, self.done)
            width = 24
            filled = int(width * self.done / total) if total else width
            self._stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K")
            self._stream.flush()
        else:
            log.info("%s", text)

    def finish(self) -> None:
        now = self._clock()
        if self._tty and self._stream is not None:
            self._show(now)
            self._stream.write("\n")
            self._stream.flush()
        else:
            log.info("%s (done)", self.line(now))


# -- files -------------------------------------------------------------------------


def _failed(file: ReplayFile | Path, line: int | None, reason: str) -> ImportFailed:
    name = file.path if isinstance(file, ReplayFile) else file
    where = f"{name} line {line}" if line is not None else str(name)
    return ImportFailed(f"{where}: {reason}; nothing of this file was imported")


def _split_rows(data: str) -> Iterable[list[str]]:
    """CSV rows; Binance's files quote nothing, so a plain split does unless they do."""
    if '"' in data:
        yield from csv.reader(io.StringIO(data))
        return
    for line in data.splitlines():
        yield line.split(",") if line else []


def _kline_columns(file: ReplayFile, source: Source) -> tuple[array[int], list[bytes], bool]:
    """Open times and frames of every row of a klines file, and whether the
    open times ascend strictly (raises ImportFailed naming the line)."""
    assert file.interval is not None
    symbol, interval = file.symbol, file.interval
    code, kind = int(interval), int(source)
    length = fixed_length(interval)
    offset = bucket_start(interval, 0) % length if length is not None else 0
    try:
        with _open_text(file.path) as text:
            data = text.read()
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _failed(file, None, str(error)) from None
    times: array[int] = array("q")
    frames: list[bytes] = []
    add_time, add_frame = times.append, frames.append
    ascending = True
    last = -(2**63)
    line = 0
    isfinite = math.isfinite
    frame = kline_framer(symbol, code, kind)
    micros_from = _MICROS_FROM
    try:
        for line, row in enumerate(_split_rows(data), start=1):
            if not row:
                continue
            if line == 1 and not row[0].strip().isdigit():
                continue  # a header (futures files)
            raw = int(row[0])
            # milliseconds, or microseconds in spot files from 2025 on (as _unit)
            unit = 1_000 if raw > micros_from else NANOS_PER_MILLI
            open_time = raw * unit
            close_time = (int(row[6]) + 1) * unit
            o, h, lo, c, v = map(float, row[1:6])
            # taker buy base and quote volumes: columns 9 and 10 when the file has them
            buy = float(row[9]) if len(row) > 9 and row[9].strip() else 0.0
            buy_quote = float(row[10]) if len(row) > 10 and row[10].strip() else 0.0
            if not isfinite(o + h + lo + c + v + buy + buy_quote):
                raise ValueError("not a finite number")
            aligned = (
                open_time % length == offset
                if length is not None
                else bucket_start(interval, open_time) == open_time
            )
            if close_time <= open_time or not aligned:
                raise ValueError(f"open time {raw} is not the start of a {interval.label} candle")
            add_frame(
                frame(
                    open_time, close_time, o, h, lo, c, v, float(row[7]), int(row[8]),
                    buy, buy_quote,
                )
            )  # fmt: skip
            add_time(open_time)
            if open_time <= last:
                ascending = False
            last = open_time
    except (IndexError, ValueError, OverflowError) as error:
        reason = "missing columns" if isinstance(error, IndexError) else str(error)
        raise _failed(file, line, reason) from None
    return times, frames, ascending


def kline_file_rows(file: ReplayFile, source: Source = Source.BACKFILL) -> list[HistoryRow]:
    """Every row of a klines file as a history row (raises ImportFailed naming the line)."""
    assert file.interval is not None
    symbol, interval = file.symbol, file.interval
    times, frames, _ = _kline_columns(file, source)
    return [HistoryRow(symbol, interval, t, 0, f) for t, f in zip(times, frames, strict=True)]


def _sorted_blocks(
    symbol: str, interval: Interval, times: array[int], frames: Sequence[bytes]
) -> list[tuple[str, int, int, Block]]:
    """Blocks of candles given in strictly ascending open time (a file as
    Binance writes it), cut at block boundaries."""
    code = int(interval)
    length = block_length(interval)
    out: list[tuple[str, int, int, Block]] = []
    count = len(times)
    i = 0
    while i < count:
        t = times[i]
        if length is not None:
            start = t - t % length
            j = bisect_left(times, start + length, i)
        else:
            start, j = block_of(interval, t), i + 1
            while j < count and block_of(interval, times[j]) == start:
                j += 1
        cut = frames[i:j]
        block = Block(
            times[i:j], array("q", bytes(8 * (j - i))), array("i", map(len, cut)), b"".join(cut)
        )
        out.append((symbol, code, start, block))
        i = j
    return out


def trade_file_rows(
    file: ReplayFile, intervals: Sequence[Interval], source: Source = Source.BACKFILL
) -> list[HistoryRow]:
    """The candles of every interval in ``intervals`` that lie whole in the file's
    period, aggregated from its trades."""
    wanted = tuple(
        i
        for i in intervals
        if bucket_start(i, file.start) == file.start
        and bucket_end(i, bucket_start(i, file.end - 1)) == file.end
    )
    if not wanted:
        return []
    aggregator = SymbolAggregator(file.symbol, AggregatorConfig(intervals=wanted), source)
    final: dict[tuple[Interval, int], Candle] = {}

    def keep(candles: Iterable[Candle]) -> None:
        for candle in candles:
            if candle.closed and file.start <= candle.open_time and candle.close_time <= file.end:
                final[(candle.interval, candle.open_time)] = candle

    batch: list[Trade] = []
    try:
        for _, _, event in _events(file):
            if isinstance(event, Trade):
                batch.append(event)
            if len(batch) >= 50_000:
                keep(aggregator.add_trades(batch))
                batch.clear()
    except ConfigError as error:
        text = str(error).split(": ", 1)[-1]
        line = text.split(" line ", 1)[-1].split(":", 1)[0] if " line " in text else None
        reason = text.split(": ", 1)[-1]
        raise _failed(file, int(line) if line and line.isdigit() else None, reason) from None
    except (OSError, UnicodeDecodeError) as error:
        raise _failed(file, None, str(error)) from None
    keep(aggregator.add_trades(batch))
    keep(aggregator.advance(file.end))
    # Imported candles are final: revision 0, marked with the load's source.
    return [
        HistoryRow(
            c.symbol, c.interval, c.open_time, 0,
            candle_frame(replace(c, revision=0, source=source)),
        )
        for _, c in sorted(final.items())
    ]  # fmt: skip


def _expand(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                sorted(p for p in path.iterdir() if p.suffix in (".zip", ".csv") and p.is_file())
            )
        elif path.exists():
            out.append(path)
        else:
            raise ImportFailed(f"{path}: no such file or directory")
    return out


class ParsedFile(NamedTuple):
    """A file ready for ``COPY``: its candles as blocks in binary COPY format."""

    path: str
    data: bytes
    rows: int


def parse_file(path: str, intervals: tuple[int, ...]) -> ParsedFile:
    """Parse one file whole (runs in a worker process; raises ImportFailed)."""
    where = Path(path)
    try:
        file = ReplayFile.parse(where)
    except ConfigError as error:
        raise _failed(where, None, str(error).split(": ", 1)[-1]) from None
    if file.kind == "klines":
        assert file.interval is not None
        times, frames, ascending = _kline_columns(file, Source.BACKFILL)
        if ascending:
            blocks = _sorted_blocks(file.symbol, file.interval, times, frames)
            return ParsedFile(path, encode_blocks(blocks), len(frames))
        rows = [
            HistoryRow(file.symbol, file.interval, t, 0, f)
            for t, f in zip(times, frames, strict=True)
        ]
    else:
        rows = trade_file_rows(file, [Interval(i) for i in intervals])
    groups = group_rows(rows)
    blocks = []
    for key, entries in groups.items():
        block = Block.empty().merged(entries)
        assert block is not None
        blocks.append((*key, block))
    return ParsedFile(path, encode_blocks(blocks), sum(map(len, groups.values())))


async def import_files(
    history: HistoryStore,
    paths: Sequence[Path],
    *,
    intervals: Sequence[Interval] = tuple(Interval),
    progress: Progress | None = None,
    workers: int | None = None,
) -> LoadReport:
    """Import every file. Files are parsed in ``workers`` processes (one per
    core by default, none for a single file) while earlier ones are written,
    in order. Stops at the first malformed file, which leaves nothing behind
    (the files before it are imported)."""
    files = [str(p) for p in _expand(paths)]
    report = LoadReport()
    started = time.perf_counter()
    codes = tuple(int(i) for i in intervals)
    count = workers if workers is not None else min(len(files), os.cpu_count() or 1)
    loop = asyncio.get_running_loop()
    pool = (
        ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))
        if count > 1
        else None
    )
    try:
        ahead = max(2, count + 1)
        parsing: list[asyncio.Future[ParsedFile]] = []
        queue = iter(files)

        def refill() -> None:
            while len(parsing) < ahead:
                path = next(queue, None)
                if path is None:
                    return
                if pool is not None:
                    parsing.append(loop.run_in_executor(pool, parse_file, path, codes))
                else:
                    parsing.append(
                        asyncio.ensure_future(asyncio.to_thread(parse_file, path, codes))
                    )

        refill()
        try:
            while parsing:
                parsed = await parsing.pop(0)
                refill()
                if progress is not None:
                    progress.add_total(parsed.rows)
                await history.write_blocks(parsed.data)
                report.files += 1
                report.candles += parsed.rows
                if progress is not None:
                    progress.advance(parsed.rows)
        finally:
            for future in parsing:
                future.cancel()
            if parsing:
                await asyncio.gather(*parsing, return_exceptions=True)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    report.seconds = time.perf_counter() - started
    return report


# -- roll-ups ----------------------------------------------------------------------


def _decimal(value: float) -> Decimal:
    """The decimal a stored double came from (its shortest repr round-trips)."""
    return Decimal(repr(value))


def roll_up(
    fine: Sequence[Candle], coarse: Interval, *, source: Source = Source.BACKFILL
) -> list[Candle]:
    """Candles of ``coarse`` from consecutive candles of a finer interval that
    nests in it, for the buckets whose finer candles are all present."""
    out: list[Candle] = []
    group: list[Candle] = []
    current: int | None = None

    def emit() -> None:
        if current is None or not group:
            return
        end = bucket_end(coarse, current)
        expected = sum(1 for _ in buckets(group[0].interval, current, end))
        if len(group) != expected:
            return  # not all of it is stored: never fabricate
        # Prices come from the candles that traded (an empty candle sits at the
        # previous close, outside this bucket's trades); all empty: an empty one.
        traded = [c for c in group if c.trade_count] or group[:1]
        out.append(
            Candle(
                symbol=group[0].symbol,
                interval=coarse,
                open_time=current,
                close_time=end,
                open=traded[0].open,
                high=max(c.high for c in traded),
                low=min(c.low for c in traded),
                close=traded[-1].close,
                volume=sum((c.volume for c in group), Decimal(0)),
                quote_volume=sum((c.quote_volume for c in group), Decimal(0)),
                trade_count=sum(c.trade_count for c in group),
                closed=True,
                revision=0,
                source=source,
                buy_volume=sum((c.buy_volume for c in group), Decimal(0)),
                buy_quote_volume=sum((c.buy_quote_volume for c in group), Decimal(0)),
            )
        )

    for candle in fine:
        start = bucket_start(coarse, candle.open_time)
        if start != current:
            emit()
            group, current = [], start
        group.append(candle)
    emit()
    return out


def _candle_of(frame: bytes, interval: Interval) -> Candle:
    c = frame_to_candle(frame)
    return Candle(
        symbol=c.symbol,
        interval=interval,
        open_time=c.open_time.seconds * 10**9 + c.open_time.nanos,
        close_time=c.close_time.seconds * 10**9 + c.close_time.nanos,
        open=_decimal(c.open),
        high=_decimal(c.high),
        low=_decimal(c.low),
        close=_decimal(c.close),
        volume=_decimal(c.volume),
        quote_volume=_decimal(c.quote_volume),
        trade_count=c.trade_count,
        closed=True,
        revision=0,
        source=Source(c.source) if c.source else Source.BACKFILL,
        buy_volume=_decimal(c.buy_volume),
        buy_quote_volume=_decimal(c.buy_quote_volume),
    )


def finest_source(coarse: Interval, available: Iterable[Interval]) -> Interval | None:
    """The longest interval of ``available`` that nests in ``coarse`` (the fewest rows to read)."""
    nesting = [i for i in available if i != coarse and _nests(i, coarse)]
    return max(nesting, key=lambda i: fixed_length(i) or 0, default=None)


async def derive(
    history: HistoryStore,
    symbol: str,
    fine: Interval,
    coarse: Interval,
    start: int,
    end: int,
    *,
    progress: Progress | None = None,
) -> int:
    """Roll stored ``fine`` candles up into the ``coarse`` buckets of
    ``[start, end)`` that history is missing; returns the candles written."""
    key = SeriesKey(symbol, coarse)
    written = 0
    holes = await history.missing(key, bucket_start(coarse, start), end)
    if progress is not None:
        progress.add_total(sum(_count(coarse, lo, hi) for lo, hi in holes))
    for lo, hi in holes:
        cursor = lo
        while cursor < hi:
            # About 100,000 finer candles a step, cut at a coarse boundary.
            step_end = cursor
            length = fixed_length(fine) or 86_400 * 10**9
            while step_end < hi and step_end - cursor < 100_000 * length:
                step_end = bucket_end(coarse, step_end)
            step_end = min(step_end, hi)
            found = await history.get_candles(
                SeriesKey(symbol, fine), start=cursor, end=step_end, limit=10**7
            )
            candles = [_candle_of(f, fine) for f in found.frames]
            rolled = roll_up(candles, coarse)
            await history.write(
                [HistoryRow(symbol, coarse, c.open_time, 0, candle_frame(c)) for c in rolled]
            )
            written += len(rolled)
            if progress is not None:
                progress.advance(_count(coarse, cursor, step_end))
            cursor = step_end
    return written


# -- REST backfill -----------------------------------------------------------------


async def backfill(
    history: HistoryStore,
    http: BinanceHttp,
    symbols: Sequence[str],
    intervals: Sequence[Interval],
    since: int,
    until: int | None = None,
    *,
    derived: Sequence[Interval] = (),
    progress: Progress | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> LoadReport:
    """Fetch the closed klines of ``intervals`` in ``[since, until)`` that history
    lacks, then derive ``derived`` intervals from the finest nesting fetched one."""
    from candlewire.feeds.binance.errors import BinanceError
    from candlewire.feeds.binance.schemas import row_candle, weight_limit

    try:
        info = await http.exchange_info(list(symbols))
    except BinanceError as error:
        raise ConfigError(f"symbols: {error}") from None
    limit = weight_limit(info)
    if limit:
        http.limiter.set_limit(limit)
    retry = Retry(Backoff(initial=0.5, maximum=30.0), name="backfill")
    report = LoadReport()
    started = time.perf_counter()
    now = clock()
    stop = now if until is None else min(until, now)
    plan: list[tuple[SeriesKey, int, int]] = []
    for symbol in symbols:
        for interval in intervals:
            key = SeriesKey(symbol, interval)
            first = bucket_start(interval, since)
            last = bucket_start(interval, stop)  # the candle holding `stop` is not closed yet
            if last <= first:
                continue
            for lo, hi in await history.missing(key, first, last):
                plan.append((key, lo, hi))
                if progress is not None:
                    progress.add_total(_count(interval, lo, hi))
    page = http.klines_limit
    for key, lo, hi in plan:
        cursor = lo
        while cursor < hi:
            try:
                rows = await http.klines(
                    key.symbol,
                    key.interval.label,
                    start_ms=cursor // NANOS_PER_MILLI,
                    end_ms=hi // NANOS_PER_MILLI - 1,
                    limit=page,
                )
            except DependencyUnavailable as error:  # the network, Binance 5xx
                await retry.wait(error)
                continue
            retry.succeeded()
            report.requests += 1
            candles = [
                row_candle(
                    key.symbol, key.interval, row, closed=True, source=Source.BACKFILL,
                    unit=NANOS_PER_MILLI,
                )
                for row in rows
            ]  # fmt: skip
            candles = [c for c in candles if cursor <= c.open_time < hi and c.close_time <= now]
            await _write_retrying(
                history,
                [
                    HistoryRow(c.symbol, c.interval, c.open_time, 0, candle_frame(c))
                    for c in candles
                ],
                retry,
            )
            report.candles += len(candles)
            reached = bucket_end(key.interval, candles[-1].open_time) if candles else hi
            if len(rows) < page:
                reached = hi  # the venue has nothing more in this range
            if progress is not None:
                progress.advance(_count(key.interval, cursor, min(reached, hi)))
            cursor = reached
    for coarse in derived:
        fine = finest_source(coarse, intervals)
        if fine is None:
            raise ConfigError(
                f"derive: {coarse.label} cannot be rolled up from "
                f"{', '.join(i.label for i in intervals)} (none nests in it)"
            )
        for symbol in symbols:
            first = bucket_start(coarse, since)
            last = bucket_start(coarse, stop)
            if last > first:
                report.candles += await derive(
                    history, symbol, fine, coarse, first, last, progress=progress
                )
    report.seconds = time.perf_counter() - started
    return report


async def _write_retrying(history: HistoryStore, rows: list[HistoryRow], retry: Retry) -> None:
    while True:
        try:
            await history.write(rows)
        except HistoryUnavailable as error:
            await retry.wait(error)
        else:
            return


def _count(interval: Interval, lo: int, hi: int) -> int:
    length = fixed_length(interval)
    if length is not None:
        return max(0, (hi - lo) // length)
    return sum(1 for _ in buckets(interval, lo, hi))
