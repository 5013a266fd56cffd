"""Client subcommands of the ``candlewire`` command: price, candles, watch, trades,
symbols, health.

::

    candlewire price BTCUSDT ETHUSDT
    candlewire candles BTCUSDT 1h --start 2026-01-01 --format csv > btc.csv
    candlewire watch BTCUSDT,ETHUSDT 1m 1h          # live table; Ctrl-C to stop
    candlewire trades BTCUSDT --limit 20             # the latest trades
    candlewire trades BTCUSDT --follow               # live trades; Ctrl-C to stop
    candlewire symbols
    candlewire health --wait 30

The server comes from ``--target`` or ``CANDLEWIRE_TARGET`` (default
``localhost:50051``); ``--api-key``/``CANDLEWIRE_API_KEY`` and
``--bearer-token``/``CANDLEWIRE_BEARER_TOKEN`` authenticate, ``--tls`` and
``--ca-file`` encrypt. Prices are printed exactly (as decimals). Exit status:
0 on success, 1 when the call failed (or ``health`` found the service not
ready), 2 for usage errors. :func:`add_commands` adds the subcommands to an
``argparse`` parser and :func:`run` runs the one chosen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from candlewire_client.aio import CandlewireClient
from candlewire_client.errors import CandlewireError, InvalidArgumentError
from candlewire_client.models import (
    Candle,
    CandleEvent,
    CandleList,
    ContinuityLost,
    Heartbeat,
    Interval,
    Price,
    Series,
    SymbolInfo,
    Trade,
    TradeEvent,
    TradeList,
    TradesContinuityLost,
    parse_time,
)
from candlewire_client.options import DEFAULT_TARGET, ENV_API_KEY, ENV_BEARER_TOKEN, ENV_TARGET

__all__ = ["COMMANDS", "add_commands", "main", "run"]

COMMANDS = ("price", "candles", "watch", "symbols", "health")
"""The subcommands :func:`add_commands` adds."""

Handler = Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]

_RELATIVE = re.compile(r"^now(?:\s*-\s*(\d+)\s*([smhdw]))?$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# -- formatting ---------------------------------------------------------------


def _time_text(moment: datetime | None) -> str:
    """ISO 8601 in UTC with a ``Z``: ``2026-01-01T00:00:00Z``."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _time_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return _time_text(value)
    if isinstance(value, Decimal):
        return float(value)  # the wire double itself: json parses it back exactly
    return value


def _table(rows: Sequence[Sequence[str]], header: Sequence[str], numeric: set[int]) -> list[str]:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(header), *(line(row) for row in rows)]


class _Output:
    """Writes records as a table, CSV or JSON."""

    def __init__(self, out: TextIO, fmt: str, columns: Sequence[str], numeric: Iterable[str]):
        self.out = out
        self.format = fmt
        self.columns = list(columns)
        self._numeric = {i for i, c in enumerate(self.columns) if c in set(numeric)}
        self._rows: list[dict[str, object]] = []
        self._count = 0
        self._csv: Any = None
        if fmt == "csv":
            self._csv = csv.writer(out, lineterminator="\n")
            self._csv.writerow(self.columns)
        elif fmt == "json":
            out.write("[")

    def write(self, row: dict[str, object]) -> None:
        if self.format == "csv":
            self._csv.writerow([_text(row.get(c)) for c in self.columns])
        elif self.format == "json":
            record = {c: _json_value(row.get(c)) for c in self.columns}
            self.out.write(("," if self._count else "") + "\n" + json.dumps(record))
        else:
            self._rows.append(row)
        self._count += 1

    def close(self) -> None:
        if self.format == "json":
            self.out.write("\n]\n" if self._count else "]\n")
        elif self.format == "table":
            rows = [[_text(r.get(c)) for c in self.columns] for r in self._rows]
            header = [c.upper() for c in self.columns]
            for line in _table(rows, header, self._numeric):
                self.out.write(line + "\n")
        self.out.flush()


# -- arguments ----------------------------------------------------------------


def _time_arg(text: str) -> datetime:
    """``now``, ``now-90m`` (s, m, h, d, w) or an ISO-8601 time (UTC unless it says)."""
    match = _RELATIVE.match(text.strip().lower())
    if match:
        now = datetime.now(UTC)
        if match.group(1) is None:
            return now
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        return parse_time(text)
    except InvalidArgumentError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601 (2026-01-01T12:00:00Z) or now-2h"
        ) from None


def _interval_arg(text: str) -> Interval:
    try:
        return Interval.parse(text)
    except InvalidArgumentError as error:
        raise argparse.ArgumentTypeError(error.field_violations[0].description) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=None,
        help=f"server address host:port (env {ENV_TARGET}, default {DEFAULT_TARGET})",
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    group.add_argument("--ca-file", default=None, help="PEM root certificates (implies --tls)")
    group.add_argument("--cert-file", default=None, help="PEM client certificate (mutual TLS)")
    group.add_argument("--key-file", default=None, help="PEM client private key (mutual TLS)")
    group.add_argument(
        "--api-key", default=None, help=f"API key, sent as x-api-key (env {ENV_API_KEY})"
    )
    group.add_argument(
        "--bearer-token",
        default=None,
        help=f"sent as authorization: Bearer ... (env {ENV_BEARER_TOKEN})",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="deadline of each call in seconds (default 10)",
    )
    return parent


def add_commands(subparsers: Any) -> None:
    """Add the client subcommands to ``subparsers`` (from ``add_subparsers()``).

    Each sets ``client_command`` in the parsed namespace; pass the namespace
    to :func:`run`.
    """
    common = _connection_options()
    formats = ("table", "csv", "json")

    price = subparsers.add_parser(
        "price", parents=[common], help="latest quotes of symbols", description=_price.__doc__
    )
    price.add_argument("symbols", nargs="+", metavar="SYMBOL")
    price.add_argument("--format", choices=formats, default="table")
    price.set_defaults(client_command=_price)

    candles = subparsers.add_parser(
        "candles", parents=[common], help="stored candles of a series", description=_candles.__doc__
    )
    candles.add_argument("symbol", metavar="SYMBOL")
    candles.add_argument("interval", type=_interval_arg, metavar="INTERVAL", help="1s ... 1M")
    candles.add_argument("--start", type=_time_arg, help="first open time (ISO 8601 or now-2h)")
    candles.add_argument("--end", type=_time_arg, help="open times before this (default now)")
    candles.add_argument(
        "--limit",
        type=_positive_int,
        help="at most this many: the first from --start, else the latest",
    )
    candles.add_argument("--page-size", type=_positive_int, help=argparse.SUPPRESS)
    candles.add_argument("--format", choices=formats, default="table")
    candles.set_defaults(client_command=_candles)

    watch = subparsers.add_parser(
        "watch",
        parents=[common],
        help="live table of forming and closed candles",
        description=_watch.__doc__,
    )
    watch.add_argument("symbol", metavar="SYMBOL", help="a symbol, or several joined by commas")
    watch.add_argument("intervals", nargs="+", type=_interval_arg, metavar="INTERVAL")
    watch.add_argument(
        "--history", type=int, default=None, help="recent candles per series first (default rows)"
    )
    watch.add_argument(
        "--rows", type=_positive_int, default=8, help="candles shown per series (default 8)"
    )
    watch.add_argument("--closed-only", action="store_true", help="closed candles only")
    watch.add_argument("--count", type=_positive_int, help="stop after this many candle updates")
    watch.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    watch.add_argument(
        "--plain",
        action="store_true",
        help="print one line per update instead of a table (default when not a terminal)",
    )
    watch.set_defaults(client_command=_watch)

    trades = subparsers.add_parser(
        "trades",
        parents=[common],
        help="stored trades of a symbol, or live ones with --follow",
        description=_trades.__doc__,
    )
    trades.add_argument(
        "symbol", metavar="SYMBOL", help="a symbol (several joined by commas with --follow)"
    )
    trades.add_argument("--start", type=_time_arg, help="first event time (ISO 8601 or now-2h)")
    trades.add_argument("--end", type=_time_arg, help="event times before this (default now)")
    trades.add_argument(
        "--limit",
        type=_positive_int,
        help="at most this many: the first from --start, else the latest (default 100); "
        "with --follow, the recent trades shown first (default 0)",
    )
    trades.add_argument("--format", choices=formats, default="table")
    trades.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="stream live trades, one line each (CSV rows, or JSON lines, with --format)",
    )
    trades.add_argument("--count", type=_positive_int, help="with --follow: stop after this many")
    trades.add_argument(
        "--duration", type=_positive_float, help="with --follow: stop after this many seconds"
    )
    trades.set_defaults(client_command=_trades)

    symbols = subparsers.add_parser(
        "symbols",
        parents=[common],
        help="symbols and intervals served",
        description=_symbols.__doc__,
    )
    symbols.add_argument("--format", choices=formats, default="table")
    symbols.set_defaults(client_command=_symbols)

    health = subparsers.add_parser(
        "health", parents=[common], help="liveness and readiness", description=_health.__doc__
    )
    health.add_argument(
        "--wait",
        type=_positive_float,
        metavar="SECONDS",
        help="wait up to SECONDS for the service to become ready",
    )
    health.set_defaults(client_command=_health)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


def _client(args: argparse.Namespace) -> CandlewireClient[Decimal]:
    """The client of a command: unset flags fall back to the environment, as in the library."""
    return CandlewireClient(
        args.target or None,
        decimals=True,
        tls=args.tls,
        root_certificates=_read(args.ca_file),
        certificate_chain=_read(args.cert_file),
        private_key=_read(args.key_file),
        api_key=args.api_key or None,
        bearer_token=args.bearer_token or None,
        timeout=args.timeout,
    )


# -- commands -----------------------------------------------------------------

_PRICE_COLUMNS = (
    "symbol",
    "bid",
    "ask",
    "mid",
    "spread",
    "last",
    "bid_size",
    "ask_size",
    "event_time",
    "stale",
    "source",
)


def _price_row(symbol: str, price: Price[Decimal] | None) -> dict[str, object]:
    if price is None:
        return {"symbol": symbol, "stale": True, "source": "no quote yet"}
    return {
        "symbol": price.symbol,
        "bid": price.bid,
        "ask": price.ask,
        "mid": price.mid,
        "spread": price.spread,
        "last": price.last,
        "bid_size": price.bid_size,
        "ask_size": price.ask_size,
        "event_time": price.event_time,
        "stale": price.stale,
        "source": price.source.value,
    }


async def _price(args: argparse.Namespace, out: TextIO) -> int:
    """Print the latest quote of each SYMBOL (exact decimals)."""
    async with _client(args) as client:
        prices = await client.get_prices(args.symbols)
    numeric = {"bid", "ask", "mid", "spread", "last", "bid_size", "ask_size"}
    output = _Output(out, args.format, _PRICE_COLUMNS, numeric)
    for symbol, price in prices.items():
        output.write(_price_row(symbol, price))
    output.close()
    return 0


async def _candles(args: argparse.Namespace, out: TextIO) -> int:
    """Print stored candles of SYMBOL at INTERVAL, oldest first.

    Without --start: all retained candles before --end (or the latest --limit).
    CSV and JSON carry every field; prices are the service's exact values.
    """
    numeric = {"open", "high", "low", "close", "volume", "quote_volume", "trade_count", "revision"}
    columns = CandleList.COLUMNS if args.format != "table" else _CANDLE_TABLE
    output = _Output(out, args.format, columns, numeric)
    async with _client(args) as client:
        async for candle in client.get_candles(
            args.symbol,
            args.interval,
            args.start,
            args.end,
            args.limit,
            page_size=args.page_size,
        ):
            row = candle.to_row()
            row["state"] = "closed" if candle.closed else "forming"
            output.write(row)
    output.close()
    return 0


_CANDLE_TABLE = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trade_count",
    "state",
    "revision",
)


_TRADE_NUMERIC = {"price", "quantity"}
_TRADE_TABLE = ("event_time", "symbol", "side", "price", "quantity", "trade_id", "source")


async def _trades(args: argparse.Namespace, out: TextIO) -> int:
    """Print stored trades of SYMBOL in the order the service received them,
    or, with --follow, stream them live (after --limit recent ones) until
    Ctrl-C, --count or --duration.

    Without --start: the latest --limit (default 100) before --end. CSV and
    JSON carry every field with the service's exact values; --follow prints
    one line per trade (a CSV row, or a JSON object per line, with --format)
    and reconnects by itself, saying so when continuity was lost.
    """
    if args.follow:
        return await _follow_trades(args, out)
    columns = TradeList.COLUMNS if args.format != "table" else _TRADE_TABLE
    output = _Output(out, args.format, columns, _TRADE_NUMERIC)
    limit = args.limit if args.limit is not None or args.start is not None else 100
    async with _client(args) as client:
        async for trade in client.get_trades(args.symbol, args.start, args.end, limit):
            output.write(trade.to_row())
    output.close()
    return 0


async def _follow_trades(args: argparse.Namespace, out: TextIO) -> int:
    symbols = [s.strip() for s in args.symbol.split(",") if s.strip()]
    writer: Any = None
    if args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(TradeList.COLUMNS)

    def emit(trade: Trade[Decimal]) -> None:
        row = trade.to_row()
        if writer is not None:
            writer.writerow([_text(row.get(c)) for c in TradeList.COLUMNS])
        elif args.format == "json":
            record = {c: _json_value(row.get(c)) for c in TradeList.COLUMNS}
            out.write(json.dumps(record) + "\n")
        else:
            out.write(
                f"{_time_text(trade.event_time)} {trade.symbol} {trade.side.value:<7} "
                f"{trade.price} x {trade.quantity} {trade.trade_id}\n"
            )
        out.flush()

    def note(text: str) -> None:
        if args.format == "table":
            out.write(text + "\n")
            out.flush()
        else:
            print(f"candlewire: {text}", file=sys.stderr)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        async with _client(args) as client:
            stream = client.subscribe_trades(
                symbols,
                history=args.limit or 0,
                start=args.start,
                on_reconnect=lambda attempt, delay, error: note(
                    f"reconnecting in {delay:.1f}s ({error.code.name})"
                ),
            )

            async def consume() -> None:
                count = 0
                async for event in stream:
                    if isinstance(event, TradeEvent):
                        emit(event.trade)
                        count += 1
                        if args.count is not None and count >= args.count:
                            return
                    elif isinstance(event, TradesContinuityLost):
                        note(f"continuity lost ({event.reason}); trades from {event.since} again")

            consumer = asyncio.create_task(consume())
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                {consumer, stopper}, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED
            )
            stopper.cancel()
            if consumer in done:
                consumer.result()  # raises what ended the stream
            else:
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
            await stream.aclose()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0


async def _symbols(args: argparse.Namespace, out: TextIO) -> int:
    """Print the symbols this deployment serves, with precision and intervals."""
    async with _client(args) as client:
        symbols = await client.list_symbols()
    columns = (
        "symbol",
        "base_asset",
        "quote_asset",
        "price_precision",
        "quantity_precision",
        "source",
        "intervals",
    )
    output = _Output(out, args.format, columns, {"price_precision", "quantity_precision"})
    for info in symbols:
        output.write(_symbol_row(info, args.format))
    output.close()
    return 0


def _symbol_row(info: SymbolInfo, fmt: str) -> dict[str, object]:
    labels = [i.value for i in info.intervals]
    return {
        "symbol": info.symbol,
        "base_asset": info.base_asset,
        "quote_asset": info.quote_asset,
        "price_precision": info.price_precision,
        "quantity_precision": info.quantity_precision,
        "source": info.source.value,
        "intervals": labels if fmt == "json" else ",".join(labels),
    }


async def _health(args: argparse.Namespace, out: TextIO) -> int:
    """Check liveness (the server) and readiness (the market-data service) via grpc.health.v1.

    Exit status 0 when both are SERVING, 1 otherwise (or when unreachable).
    """
    async with _client(args) as client:
        if args.wait is not None:
            try:
                health = await client.wait_until_ready(args.wait)
            except CandlewireError as error:
                out.write(f"target     {client.target}\nnot ready after {args.wait:g} s: {error}\n")
                return 1
        else:
            health = await client.health()
        out.write(
            f"target     {client.target}\n"
            f"liveness   {health.liveness}\n"
            f"readiness  {health.readiness}\n"
        )
    return 0 if health.live and health.ready else 1


# -- watch --------------------------------------------------------------------


class _Board:
    """What ``watch`` shows: recent candles per series and the connection state."""

    def __init__(
        self, out: TextIO, target: str, series: Sequence[Series], rows: int, tty: bool
    ) -> None:
        self.out = out
        self.target = target
        self.series = list(series)
        self.rows = rows
        self.tty = tty
        self.candles: dict[Series, dict[datetime, Candle[Decimal]]] = {s: {} for s in series}
        self.watermarks: dict[Series, datetime | None] = {}
        self.state = "connecting"
        self.note = ""
        self.reconnects = 0
        self.updates = 0
        self.losses = 0
        self.alert = ""
        self.stopped = ""
        self._last_draw = 0.0
        self._pending: asyncio.TimerHandle | None = None
        if tty:
            self.out.write("\x1b[?25l")  # hide the cursor while redrawing
        else:
            self._line(f"# watching {', '.join(map(str, series))} at {target}")

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def set_state(self, state: str, note: str = "") -> None:
        if state == self.state and note == self.note:
            return
        self.state, self.note = state, note
        if not self.tty:
            self._line(f"# {state}" + (f": {note}" if note else ""))
        self.draw()

    def reconnecting(self, attempt: int, delay: float, error: CandlewireError) -> None:
        self.reconnects += 1
        self.set_state("reconnecting", f"attempt {attempt} in {delay:.1f} s after {error}")

    def add(self, event: object, live: bool) -> None:
        if isinstance(event, ContinuityLost):
            since = _time_text(event.since) if event.since is not None else "the start"
            self.losses += 1
            self.alert = f"continuity lost ({event.reason}); candles again from {since}"
            if not self.tty:
                self._line(f"# {self.alert}")
        self.set_state("live" if live else "history")
        if isinstance(event, CandleEvent):
            candle: Candle[Decimal] = event.candle
            self.updates += 1
            recent = self.candles.setdefault(candle.series, {})
            recent[candle.open_time] = candle
            for old in sorted(recent)[: -self.rows]:
                del recent[old]
            if not self.tty:
                self._line(_candle_line(candle))
        elif isinstance(event, Heartbeat):
            for mark in event.watermarks:
                self.watermarks[mark.series] = mark.last_event_time
        self.draw()

    def draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            if self._pending is None:
                delay = 0.1 - (now - self._last_draw)
                self._pending = asyncio.get_running_loop().call_later(delay, self._draw_pending)
            return
        self._last_draw = now
        self.out.write("\x1b[H\x1b[2J" + "\n".join(self.render()) + "\n")
        self.out.flush()

    def _draw_pending(self) -> None:
        self._pending = None
        self.draw(force=True)

    def render(self) -> list[str]:
        clock = datetime.now(UTC).strftime("%H:%M:%S UTC")
        state = self.state + (f" ({self.note})" if self.note else "")
        lines = [
            f"\x1b[1mcandlewire watch\x1b[0m  {self.target}  {clock}",
            f"state: {state}   reconnects: {self.reconnects}   updates: {self.updates}",
        ]
        if self.alert:
            lines.append(f"\x1b[1;33m{self.alert}\x1b[0m   (times: {self.losses})")
        lines.append("")
        header = ["OPEN TIME", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "TRADES", "STATE"]
        for series in self.series:
            mark = self.watermarks.get(series)
            upstream = f"   upstream at {_time_text(mark)}" if mark is not None else ""
            lines.append(f"\x1b[1m{series}\x1b[0m{upstream}")
            rows = [
                [
                    c.open_time.strftime("%Y-%m-%d %H:%M:%S"),
                    str(c.open),
                    str(c.high),
                    str(c.low),
                    str(c.close),
                    str(c.volume),
                    str(c.trade_count),
                    ("closed" if c.closed else "forming") + f" r{c.revision}",
                ]
                for c in sorted(self.candles.get(series, {}).values(), key=lambda c: c.open_time)
            ]
            lines.extend("  " + line for line in _table(rows, header, {1, 2, 3, 4, 5, 6}))
            lines.append("")
        lines.append(f"stopped: {self.stopped}" if self.stopped else "Ctrl-C to stop")
        return lines

    def finish(self, reason: str) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self.stopped = reason
        if self.tty:
            self.draw(force=True)
            self.out.write("\x1b[?25h")
            self.out.flush()
        else:
            self._line(f"# stopped: {reason}")


def _candle_line(c: Candle[Decimal]) -> str:
    state = "closed" if c.closed else "forming"
    return (
        f"{c.series} {_time_text(c.open_time)} o={c.open} h={c.high} l={c.low} c={c.close} "
        f"v={c.volume} n={c.trade_count} {state} r{c.revision}"
    )


async def _watch(args: argparse.Namespace, out: TextIO) -> int:
    """Show forming and closed candles of SYMBOL at each INTERVAL as they change.

    SYMBOL may list several symbols joined by commas. On a terminal the table
    is redrawn in place; otherwise one line is printed per update. The stream
    reconnects by itself (shown as "reconnecting"); when the server could not
    resume it (a restart with an empty store) a "continuity lost" line says
    so and the candles since then are shown again as the server now has them.
    Ctrl-C, --count or --duration stop it.
    """
    symbols = [s.strip() for s in args.symbol.split(",") if s.strip()]
    series = [Series(symbol, interval) for symbol in symbols for interval in args.intervals]
    history = args.rows if args.history is None else args.history
    tty = not args.plain and out.isatty()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, stop.set)  # only possible in the main thread
            handled.append(sig)
    client = _client(args)
    board = _Board(out, client.target, series, args.rows, tty)
    reason = "stopped"
    try:
        async with client:
            stream = client.subscribe_candles(
                series,
                history=history,
                closed_only=args.closed_only,
                on_reconnect=board.reconnecting,
            )

            async def consume() -> str:
                candles = 0
                async for event in stream:
                    board.add(event, live=stream.state == "live")
                    if isinstance(event, CandleEvent):
                        candles += 1
                        if args.count is not None and candles >= args.count:
                            return f"{candles} updates"
                return "stream ended"

            consumer = asyncio.create_task(consume())
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                {consumer, stopper}, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED
            )
            stopper.cancel()
            if consumer in done:
                reason = consumer.result()  # raises what ended the stream
            else:
                reason = "interrupted" if stop.is_set() else f"after {args.duration:g} s"
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
            await stream.aclose()
    except CandlewireError as error:
        board.set_state("failed", str(error))
        reason = "failed"
        raise
    finally:
        board.finish(reason)
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0


# -- running ------------------------------------------------------------------


def run(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Run the client subcommand chosen in ``args``; returns the exit status.

    Errors are printed to stderr as ``candlewire: CODE: message`` with the
    fields the server named; Ctrl-C ends a command quietly (status 130,
    except ``watch``, for which it is the normal way to stop: 0).
    """
    handler: Handler = args.client_command
    out = stdout or sys.stdout
    try:
        return asyncio.run(handler(args, out))
    except KeyboardInterrupt:
        return 0 if handler is _watch or getattr(args, "follow", False) else 130
    except CandlewireError as error:
        print(f"candlewire: {error}", file=sys.stderr)
        for violation in error.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return 1
    except OSError as error:
        if isinstance(error, BrokenPipeError):  # e.g. piped into head
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return 1
        print(f"candlewire: {error}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run the client subcommands alone: ``python -m candlewire_client.cli price BTCUSDT``.

    Output goes to ``stdout`` (default ``sys.stdout``); returns the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="candlewire-client", description="Candlewire market-data client"
    )
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv), stdout=stdout)


if __name__ == "__main__":
    sys.exit(main())
