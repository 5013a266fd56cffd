"""ReplayFeed: data.binance.vision dump files through the live pipeline.

Binance publishes its history at https://data.binance.vision as CSV files
(zipped), named after what they hold:

* ``BTCUSDT-1m-2024-01.zip`` / ``BTCUSDT-1m-2024-01-01.zip``: klines of one
  interval, 12 columns, no header (open time, open, high, low, close, volume,
  close time, quote asset volume, number of trades, taker buy base volume,
  taker buy quote volume, ignore); the taker buy volumes become the candles'
  ``buy_volume`` and ``buy_quote_volume`` (left unset by files without them);
* ``BTCUSDT-trades-2024-01-01.zip``: trades, 7 columns (id, price, qty,
  quoteQty, time, isBuyerMaker, isBestMatch);
* ``BTCUSDT-aggTrades-2024-01-01.zip``: aggregate trades, 8 columns (id,
  price, qty, first id, last id, time, isBuyerMaker, isBestMatch).

Times are milliseconds, or microseconds in spot files from 2025 on; the unit
is told by the value itself, row by row. A header row (futures files have
one) is skipped. Files may be zipped or not.

Trades go through ``sink.trades``, so every configured interval is
aggregated from them; klines go through ``sink.candles`` as closed venue
candles, released when the replay clock reaches their close time. Everything
is marked ``Source.REPLAY``. Several files are merged by time. ``speed`` 1
replays in real time, 60 sixty times faster, 0 as fast as possible. When the
data ends, the clock is moved to the end of the files' period (the day or
month in their names), so the candles of that period close, and is then held
there: the watermark is repeated so readiness stays up, and nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime
import heapq
import io
import itertools
import logging
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Literal

from candlewire.domain import (
    NANOS_PER_MILLI,
    Candle,
    Instrument,
    Interval,
    Side,
    Source,
    Trade,
)
from candlewire.errors import ConfigError
from candlewire.feeds.base import FeedSink
from candlewire.intervals import bucket_end
from candlewire.tasks import checkpoint

__all__ = ["ReplayFeed", "ReplayFile"]

log = logging.getLogger(__name__)

_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<kind>trades|aggTrades|\d+[smhdwM])"
    r"-(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?\.(?:csv|zip)$"
)
_MICROS_FROM = 10**14  # a millisecond time above this would be the year 5138
_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "USD")
_SAMPLE = 2000  # rows read per file to tell the precision

Kind = Literal["klines", "trades", "aggTrades"]


@dataclass(frozen=True, slots=True)
class ReplayFile:
    """One dump file and what its name says."""

    path: Path
    symbol: str
    kind: Kind
    interval: Interval | None
    start: int
    """Start of the period the file covers (ns)."""
    end: int
    """End of that period (ns, exclusive)."""

    @classmethod
    def parse(cls, path: Path) -> ReplayFile:
        """Read symbol, kind, interval and period from the file name."""
        match = _NAME.match(path.name)
        if match is None:
            raise ConfigError(
                f"replay_path: {path.name!r} is not named like a data.binance.vision file "
                "(BTCUSDT-1m-2024-01.zip, BTCUSDT-trades-2024-01-01.csv)"
            )
        kind_text = match["kind"]
        interval: Interval | None = None
        kind: Kind
        if kind_text in ("trades", "aggTrades"):
            kind = "trades" if kind_text == "trades" else "aggTrades"
        else:
            kind = "klines"
            try:
                interval = Interval.parse(kind_text)
            except ValueError as error:
                raise ConfigError(f"replay_path: {path.name}: {error}") from None
        year, month = int(match["year"]), int(match["month"])
        if match["day"] is not None:
            start = _day_start(year, month, int(match["day"]))
            end = start + 86_400 * 10**9
        else:
            start = _day_start(year, month, 1)
            end = bucket_end(Interval.MO1, start)
        return cls(path, match["symbol"], kind, interval, start, end)


def _day_start(year: int, month: int, day: int) -> int:
    moment = datetime.datetime(year, month, day, tzinfo=datetime.UTC)
    return int(moment.timestamp()) * 10**9


def _unit(value: int) -> int:
    """Nanoseconds per unit of a dump timestamp (microseconds from 2025 on, else ms)."""
    return 1_000 if value > _MICROS_FROM else NANOS_PER_MILLI


def _rows(path: Path) -> Iterator[list[str]]:
    """The CSV rows of a file, zipped or not, without a header row."""
    with _open_text(path) as text:
        for number, row in enumerate(csv.reader(text)):
            if not row:
                continue
            if number == 0 and not row[0].strip().isdigit():
                continue  # a header
            yield row


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    """A dump file as text: the CSV member of a zip, or the file itself."""
    if path.suffix != ".zip":
        with path.open(encoding="utf-8", newline="") as text:
            yield text
        return
    with zipfile.ZipFile(path) as archive:
        members = [name for name in archive.namelist() if name.endswith(".csv")]
        if not members:
            raise ConfigError(f"replay_path: {path.name} holds no .csv file")
        with (
            archive.open(members[0]) as raw,
            io.TextIOWrapper(raw, encoding="utf-8", newline="") as text,
        ):
            yield text


# An event of the replay: (time, order, payload); klines sort after trades of the same time.
_Event = tuple[int, int, Trade | Candle]


def _events(file: ReplayFile) -> Iterator[_Event]:
    """A file's rows as timed events, in file order (which is time order)."""
    symbol = file.symbol
    for line, row in enumerate(_rows(file.path), start=1):
        try:
            if file.kind == "klines":
                assert file.interval is not None
                candle = _kline(symbol, file.interval, row)
                yield candle.close_time, 1, candle
            else:
                # trades: id, price, qty, quoteQty, time, isBuyerMaker, ...;
                # aggTrades: id, price, qty, firstId, lastId, time, isBuyerMaker, ...
                time_col = 4 if file.kind == "trades" else 5
                raw_time = int(row[time_col])
                time = raw_time * _unit(raw_time)
                maker = row[time_col + 1].strip().lower() if len(row) > time_col + 1 else ""
                side = {"true": Side.SELL, "false": Side.BUY}.get(maker, Side.UNKNOWN)
                trade = Trade(
                    symbol, time, Decimal(row[1]), Decimal(row[2]), Source.REPLAY, side, row[0]
                )
                yield time, 0, trade
        except (IndexError, ValueError, InvalidOperation) as error:
            raise ConfigError(f"replay_path: {file.path.name} line {line}: {error}") from None


def _kline(symbol: str, interval: Interval, row: list[str]) -> Candle:
    open_raw = int(row[0])
    unit = _unit(open_raw)
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=open_raw * unit,
        close_time=(int(row[6]) + 1) * unit,
        open=Decimal(row[1]),
        high=Decimal(row[2]),
        low=Decimal(row[3]),
        close=Decimal(row[4]),
        volume=Decimal(row[5]),
        quote_volume=Decimal(row[7]),
        trade_count=int(row[8]),
        closed=True,
        revision=0,
        source=Source.REPLAY,
        buy_volume=_optional(row, 9),
        buy_quote_volume=_optional(row, 10),
    )


def _optional(row: list[str], column: int) -> Decimal:
    """A taker-buy column of a kline row; 0 (unset) when the file has none."""
    text = row[column].strip() if len(row) > column else ""
    return Decimal(text) if text else Decimal(0)


def _places(text: str) -> int:
    exponent = Decimal(text).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _take(events: Iterator[_Event], count: int) -> list[_Event]:
    return list(itertools.islice(events, count))


class ReplayFeed:
    """Implements :class:`~candlewire.feeds.base.Feed` from data.binance.vision files.

    ``path`` is a file or a directory of files; files of symbols not in
    ``symbols`` and klines of intervals not in ``intervals`` are skipped.
    """

    def __init__(
        self,
        path: str | Path,
        symbols: Sequence[str],
        intervals: Sequence[Interval],
        *,
        speed: float = 1.0,
        batch: int = 2000,
        hold_interval: float = 1.0,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._path = Path(path)
        self._symbols = tuple(symbols)
        self._intervals = tuple(intervals)
        self._speed = speed
        self._batch = batch
        self._hold_interval = hold_interval
        self._files: list[ReplayFile] = []
        self.finished = asyncio.Event()
        """Set once every file was replayed."""

    def _find_files(self) -> list[ReplayFile]:
        if self._path.is_dir():
            paths = sorted(p for p in self._path.iterdir() if p.suffix in (".csv", ".zip"))
        elif self._path.is_file():
            paths = [self._path]
        else:
            raise ConfigError(f"replay_path: {str(self._path)!r} does not exist")
        files = []
        for path in paths:
            file = ReplayFile.parse(path)
            if file.symbol not in self._symbols:
                log.warning("replay: %s skipped: %s is not configured", path.name, file.symbol)
            elif file.interval is not None and file.interval not in self._intervals:
                log.warning("replay: %s skipped: %s is not served", path.name, file.interval.label)
            else:
                files.append(file)
        for symbol in self._symbols:
            kinds = {f.kind == "klines" for f in files if f.symbol == symbol}
            if not kinds:
                raise ConfigError(f"replay_path: no file for {symbol} in {self._path}")
            if len(kinds) > 1:
                raise ConfigError(
                    f"replay_path: both klines and trades for {symbol}; "
                    "trades already make every interval"
                )
        return files

    async def instruments(self) -> Mapping[str, Instrument]:
        """The configured symbols, with the precision their data shows."""
        self._files = await asyncio.to_thread(self._find_files)
        return await asyncio.to_thread(self._describe)

    def _describe(self) -> dict[str, Instrument]:
        out = {}
        for symbol in self._symbols:
            price = quantity = 0
            for file in (f for f in self._files if f.symbol == symbol):
                for row in itertools.islice(_rows(file.path), _SAMPLE):
                    try:
                        prices = row[1:5] if file.kind == "klines" else row[1:2]
                        price = max(price, *(_places(p) for p in prices))
                        quantity = max(
                            quantity, _places(row[5] if file.kind == "klines" else row[2])
                        )
                    except (IndexError, InvalidOperation) as error:
                        raise ConfigError(f"replay_path: {file.path.name}: {error}") from None
            quote = next((q for q in _QUOTES if symbol.endswith(q) and symbol != q), "")
            base = symbol[: len(symbol) - len(quote)] if quote else symbol
            out[symbol] = Instrument(symbol, base, quote, price, quantity, Source.REPLAY)
        return out

    async def backfill(self, sink: FeedSink) -> None:
        """Nothing to load: the replay is the history."""

    async def run(self, sink: FeedSink) -> None:
        """Replay the files at ``speed``, then hold the clock at their end."""
        if not self._files:
            self._files = await asyncio.to_thread(self._find_files)
        loop = asyncio.get_running_loop()
        events = heapq.merge(*(_events(f) for f in self._files), key=lambda e: (e[0], e[1]))
        first: int | None = None
        wall0 = loop.time()
        group: list[_Event] = []
        while True:
            checkpoint()
            chunk = await asyncio.to_thread(_take, events, self._batch)
            if not chunk:
                break
            if first is None:
                first = chunk[0][0]
            if self._speed == 0:
                await self._emit(sink, chunk)
                continue
            for event in chunk:
                due = wall0 + (event[0] - first) / 1e9 / self._speed
                if due > loop.time() + 0.002 and group:
                    await self._emit(sink, group)
                    group = []
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.append(event)
            if len(group) >= self._batch:
                await self._emit(sink, group)
                group = []
        if group:
            await self._emit(sink, group)
        ends: dict[str, int] = {}
        for file in self._files:
            ends[file.symbol] = max(ends.get(file.symbol, 0), file.end)
        log.info("replay finished")
        self.finished.set()
        while True:
            checkpoint()
            for symbol, end in ends.items():
                await sink.watermark(symbol, end)
            await asyncio.sleep(self._hold_interval)

    async def _emit(self, sink: FeedSink, events: list[_Event]) -> None:
        trades = [e[2] for e in events if isinstance(e[2], Trade)]
        candles = [e[2] for e in events if isinstance(e[2], Candle)]
        if trades:
            await sink.trades(trades)
        if candles:
            await sink.candles(candles)
        marks: dict[str, int] = {}
        for time, _, payload in events:
            marks[payload.symbol] = max(marks.get(payload.symbol, 0), time)
        for symbol, time in marks.items():
            await sink.watermark(symbol, time)
