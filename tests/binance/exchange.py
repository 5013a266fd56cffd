"""A local Binance for tests: REST and websocket servers over a ground-truth trade tape.

:class:`Exchange` serves, on free local ports,

* ``GET /api/v3/exchangeInfo`` and ``GET /api/v3/klines`` over HTTP/1.1
  (a small asyncio server with keep-alive), with ``X-MBX-USED-WEIGHT-1M``;
* combined streams ``/stream?streams=...`` (and SUBSCRIBE requests) on a real
  ``websockets`` server: ``@kline_<interval>``, ``@trade`` and
  ``@bookTicker``, message shapes as in Binance's documentation.

Every candle it serves is computed from the tape at the exchange's clock
(:attr:`Exchange.now`, milliseconds), which only the test moves
(:meth:`Exchange.advance`). :meth:`Exchange.truth` is therefore the ground
truth: what a perfect client would hold. Faults are scripted: dropped, muted
or retired (``serverShutdown``) connections, withheld or mangled messages,
and HTTP 429/418 answers.

The harness at the bottom runs the real service against it and reads what a
SubscribeCandles client and GetCandles see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from candlewire.app import App
from candlewire.config import load
from candlewire.domain import NANOS_PER_MILLI, Interval
from candlewire.intervals import bucket_end, bucket_start
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc

WAIT = 10.0  # seconds: a deadline for something that should happen soon
MS = NANOS_PER_MILLI
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms: the exchange's clock at start


@dataclass(frozen=True, slots=True)
class TapeTrade:
    symbol: str
    id: int
    time: int  # ms
    price: Decimal
    qty: Decimal
    buyer_maker: bool


def make_tape(
    symbols: Sequence[str],
    start: int,
    end: int,
    *,
    seed: int = 1,
    quiet: tuple[int, int] | None = None,
) -> list[TapeTrade]:
    """Random trades from ``start`` to ``end`` (ms), one at ``start`` for each symbol,
    none inside ``quiet`` (so some candles are empty)."""
    rng = random.Random(seed)
    tape: list[TapeTrade] = []
    for n, symbol in enumerate(symbols):
        price = Decimal(100 * (n + 1))
        t = start
        ident = 1000 * (n + 1)
        while t < end:
            if quiet is None or not quiet[0] <= t < quiet[1]:
                price += Decimal(rng.randint(-20, 20)) / 100
                qty = Decimal(rng.randint(1, 5000)) / 10_000
                tape.append(TapeTrade(symbol, ident, t, price, qty, rng.random() < 0.5))
                ident += 1
            t += rng.randint(150, 1700)
    tape.sort(key=lambda trade: (trade.time, trade.symbol, trade.id))
    return tape


@dataclass(frozen=True, slots=True)
class Kline:
    """One candle as the exchange knows it (ms times, exact decimals)."""

    symbol: str
    interval: Interval
    open_time: int
    close_time: int  # last millisecond, as Binance's T
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    taker_volume: Decimal
    taker_quote: Decimal
    first_id: int
    last_id: int
    closed: bool

    def row(self) -> list[Any]:
        """As a row of GET /api/v3/klines."""
        return [
            self.open_time,
            _f(self.open),
            _f(self.high),
            _f(self.low),
            _f(self.close),
            _f(self.volume),
            self.close_time,
            _f(self.quote_volume),
            self.trades,
            _f(self.taker_volume),
            _f(self.taker_quote),
            "0",
        ]

    def event(self, event_time: int) -> dict[str, Any]:
        """As a ``<symbol>@kline_<interval>`` event."""
        return {
            "e": "kline",
            "E": event_time,
            "s": self.symbol,
            "k": {
                "t": self.open_time,
                "T": self.close_time,
                "s": self.symbol,
                "i": self.interval.label,
                "f": self.first_id,
                "L": self.last_id,
                "o": _f(self.open),
                "c": _f(self.close),
                "h": _f(self.high),
                "l": _f(self.low),
                "v": _f(self.volume),
                "n": self.trades,
                "x": self.closed,
                "q": _f(self.quote_volume),
                "V": _f(self.taker_volume),
                "Q": _f(self.taker_quote),
                "B": "0",
            },
        }

    def key(self) -> tuple[Any, ...]:
        """What a served candle must equal (open time in ns, doubles as on the wire)."""
        return (
            self.open_time * MS,
            float(self.open),
            float(self.high),
            float(self.low),
            float(self.close),
            float(self.volume),
            self.trades,
            self.closed,
        )


def _f(value: Decimal) -> str:
    return f"{value:.8f}"


class Market:
    """Candles of a tape at any moment; the exchange's matching engine, read-only."""

    def __init__(self, tape: Sequence[TapeTrade]) -> None:
        self.by_symbol: dict[str, list[TapeTrade]] = {}
        for trade in tape:
            self.by_symbol.setdefault(trade.symbol, []).append(trade)
        self.times = {s: [t.time for t in ts] for s, ts in self.by_symbol.items()}
        self._closed: dict[tuple[str, Interval, int], Kline] = {}  # closed klines never change

    def opens(self, symbol: str, interval: Interval, now: int) -> list[int]:
        """Open times (ms) of every candle from the listing to the one holding ``now``."""
        trades = self.by_symbol.get(symbol)
        if not trades or trades[0].time > now:
            return []
        start = bucket_start(interval, trades[0].time * MS)
        last = bucket_start(interval, now * MS)
        out = []
        while start <= last:
            out.append(start // MS)
            start = bucket_end(interval, start)
        return out

    def kline(self, symbol: str, interval: Interval, open_time: int, now: int) -> Kline:
        end = bucket_end(interval, open_time * MS) // MS
        if now >= end:
            cached = self._closed.get((symbol, interval, open_time))
            if cached is None:
                cached = self._closed[(symbol, interval, open_time)] = self._compute(
                    symbol, interval, open_time, end, now
                )
            return cached
        return self._compute(symbol, interval, open_time, end, now)

    def _compute(
        self, symbol: str, interval: Interval, open_time: int, end: int, now: int
    ) -> Kline:
        trades = self.by_symbol[symbol]
        times = self.times[symbol]
        lo = bisect_left(times, open_time)
        hi = bisect_right(times, min(now, end - 1))
        part = trades[lo:hi]
        if part:
            prices = [t.price for t in part]
            o, c, h, l = prices[0], prices[-1], max(prices), min(prices)  # noqa: E741
        else:
            o = c = h = l = trades[lo - 1].price  # noqa: E741
        taker = [t for t in part if not t.buyer_maker]
        return Kline(
            symbol=symbol,
            interval=interval,
            open_time=open_time,
            close_time=end - 1,
            open=o,
            high=h,
            low=l,
            close=c,
            volume=sum((t.qty for t in part), Decimal(0)),
            quote_volume=sum((t.qty * t.price for t in part), Decimal(0)),
            trades=len(part),
            taker_volume=sum((t.qty for t in taker), Decimal(0)),
            taker_quote=sum((t.qty * t.price for t in taker), Decimal(0)),
            first_id=part[0].id if part else -1,
            last_id=part[-1].id if part else -1,
            closed=now >= end,
        )

    def klines(self, symbol: str, interval: Interval, now: int) -> list[Kline]:
        return [self.kline(symbol, interval, t, now) for t in self.opens(symbol, interval, now)]


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    symbol: str
    base: str
    quote: str
    status: str = "TRADING"
    tick: str = "0.01000000"
    step: str = "0.00010000"


@dataclass(slots=True)
class Request:
    at: float  # monotonic seconds
    path: str
    params: dict[str, str]
    status: int


@dataclass(eq=False)
class _Client:
    conn: ServerConnection
    number: int
    streams: set[str]
    muted: bool = False
    retiring: bool = False
    sent: int = 0


Mangle = Callable[[list[str]], list[str]]


@dataclass
class _Fault:
    status: int
    retry_after: str
    path: str


class Exchange:
    """Binance, locally. Use as ``async with Exchange(tape, specs) as exchange``."""

    def __init__(
        self,
        tape: Sequence[TapeTrade],
        specs: Iterable[SymbolSpec],
        *,
        now: int = T0,
        weight_limit: int = 6000,
        clock: Callable[[], float] = time.time,
        rest_port: int = 0,
        ws_port: int = 0,
    ) -> None:
        """``rest_port`` and ``ws_port``: where to listen (0: free ports)."""
        self.market = Market(tape)
        self._ports = (rest_port, ws_port)
        self.tape = list(tape)
        self.specs = {s.symbol: s for s in specs}
        self.now = now
        self.weight_limit = weight_limit
        self.clock = clock
        """Wall-clock seconds by which request weight is counted per minute."""
        self.requests: list[Request] = []
        self.clients: list[_Client] = []
        self.connections = 0
        self.max_open = 0
        self.mangle: Mangle | None = None
        self.withhold: Callable[[str, dict[str, Any]], bool] | None = None
        self.withheld = 0
        self.faults: list[_Fault] = []
        self.banned_at = 0.0
        self.banned_until = 0.0
        self.connected_at: list[float] = []  # monotonic time of each connection
        self.subscribe_requests = 0
        self._weight: dict[int, int] = {}
        self._book_id = 1
        self._changed = asyncio.Event()
        self._ws: Server | None = None
        self._http: asyncio.Server | None = None
        self._http_writers: set[asyncio.StreamWriter] = set()
        self.rest_url = ""
        self.ws_url = ""

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Exchange:
        rest_port, ws_port = self._ports
        self._ws = await serve(self._serve_ws, "127.0.0.1", ws_port)
        ws_port = self._ws.sockets[0].getsockname()[1]
        self._http = await asyncio.start_server(self._serve_http, "127.0.0.1", rest_port)
        http_port = self._http.sockets[0].getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{ws_port}"
        self.rest_url = f"http://127.0.0.1:{http_port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._ws is not None and self._http is not None
        self._ws.close()
        await self._ws.wait_closed()
        self._http.close()
        for writer in list(self._http_writers):
            writer.close()
        await self._http.wait_closed()

    async def until(self, predicate: Callable[[], bool], what: str, within: float = WAIT) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the exchange changes."""
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def until_connections(self, count: int) -> None:
        """Wait until ``count`` connections were opened in all."""
        await self.until(lambda: self.connections >= count, f"{count} connections")

    def _touch(self) -> None:
        self._changed.set()

    # --- ground truth ------------------------------------------------------------------

    def truth(self, symbol: str, interval: Interval) -> list[Kline]:
        return self.market.klines(symbol, interval, self.now)

    @property
    def open_clients(self) -> list[_Client]:
        return [c for c in self.clients if c.streams]

    def kline_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/api/v3/klines"]

    # --- the clock and the streams -----------------------------------------------------

    async def advance(self, to: int) -> None:
        """Move the clock to ``to`` (ms) and push what happened to every subscriber."""
        before = self.now
        if to <= before:
            return
        trades = self.tape[bisect_right([t.time for t in self.tape], before) :]
        self.now = to
        out: list[tuple[str, dict[str, Any]]] = []
        for trade in trades:
            if trade.time > to:
                break
            lower = trade.symbol.lower()
            out.append(
                (
                    f"{lower}@trade",
                    {
                        "e": "trade",
                        "E": trade.time,
                        "s": trade.symbol,
                        "t": trade.id,
                        "p": _f(trade.price),
                        "q": _f(trade.qty),
                        "T": trade.time,
                        "m": trade.buyer_maker,
                        "M": True,
                    },
                )
            )
            self._book_id += 1
            tick = Decimal("0.01")
            out.append(
                (
                    f"{lower}@bookTicker",
                    {
                        "u": self._book_id,
                        "s": trade.symbol,
                        "b": _f(trade.price - tick),
                        "B": "1.50000000",
                        "a": _f(trade.price + tick),
                        "A": "2.50000000",
                    },
                )
            )
        subscribed = {s for c in self.clients for s in c.streams if "@kline_" in s}
        for stream in sorted(subscribed):
            lower, interval_label = stream.split("@kline_")
            symbol = lower.upper()
            interval = Interval.parse(interval_label)
            for open_time in self.market.opens(symbol, interval, to):
                end = bucket_end(interval, open_time * MS) // MS
                if end <= before:
                    continue  # closed before this step
                kline = self.market.kline(symbol, interval, open_time, to)
                out.append((stream, kline.event(to)))
        await self._deliver(out)

    async def _deliver(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        for client in list(self.clients):
            batch = []
            for stream, data in messages:
                if stream not in client.streams:
                    continue
                if self.withhold is not None and self.withhold(stream, data):
                    self.withheld += 1
                    continue
                batch.append(json.dumps({"stream": stream, "data": data}))
            if self.mangle is not None:
                batch = self.mangle(batch)
            if client.muted:
                continue
            for text in batch:
                try:
                    await client.conn.send(text)
                except ConnectionClosed:
                    break
                client.sent += 1

    # --- websocket faults --------------------------------------------------------------

    def drop_connections(self) -> None:
        """Cut every connection without a close frame (a network failure)."""
        for client in self.clients:
            client.conn.transport.abort()

    def mute(self) -> None:
        """Stop sending on the open connections, keeping them open (and answering pings)."""
        for client in self.clients:
            client.muted = True

    async def server_shutdown(self) -> list[_Client]:
        """Send ``serverShutdown`` on every open connection; return them."""
        retiring = [c for c in self.clients if not c.retiring]
        for client in retiring:
            client.retiring = True
            text = json.dumps(
                {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": self.now}}
            )
            with contextlib.suppress(ConnectionClosed):
                await client.conn.send(text)
        return retiring

    async def _serve_ws(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        url = urlsplit(conn.request.path)
        if url.path != "/stream":
            await conn.close(1008, "unknown path")
            return
        names = parse_qs(url.query).get("streams", [""])[0]
        self.connections += 1
        self.connected_at.append(time.monotonic())
        client = _Client(conn, self.connections, {s for s in names.split("/") if s})
        self.clients.append(client)
        self.max_open = max(self.max_open, len(self.clients))
        self._touch()
        try:
            async for message in conn:
                request = json.loads(message)
                if request.get("method") == "SUBSCRIBE":
                    self.subscribe_requests += 1
                    client.streams.update(request["params"])
                    await conn.send(json.dumps({"result": None, "id": request["id"]}))
                else:
                    await conn.send(
                        json.dumps({"code": 2, "msg": "Invalid request", "id": request.get("id")})
                    )
                self._touch()
        except ConnectionClosed:
            pass
        finally:
            self.clients.remove(client)
            self._touch()

    # --- REST --------------------------------------------------------------------------

    def fail_next(self, status: int, retry_after: str, *, path: str = "/api/v3/klines") -> None:
        """Answer the next request to ``path`` with ``status`` and ``Retry-After``."""
        self.faults.append(_Fault(status, retry_after, path))

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._http_writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                status, body, extra = self._answer(method, target)
                payload = json.dumps(body).encode()
                head = [
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                    "Content-Type: application/json;charset=UTF-8",
                    f"Content-Length: {len(payload)}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
                await writer.drain()
                self._touch()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, ValueError):
            return
        finally:
            self._http_writers.discard(writer)
            writer.close()

    def _answer(self, method: str, target: str) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(target)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        now = time.monotonic()
        request = Request(now, url.path, params, 200)
        self.requests.append(request)
        minute = int(self.clock() // 60)
        weight = {"/api/v3/klines": 2, "/api/v3/exchangeInfo": 20}.get(url.path, 1)
        self._weight[minute] = self._weight.get(minute, 0) + weight
        extra = {"X-MBX-USED-WEIGHT-1M": str(self._weight[minute])}
        if now < self.banned_until:
            request.status = 418
            left = f"{self.banned_until - now:.0f}"
            return (
                418,
                _error(-1003, "Way too much request weight used; IP banned."),
                {
                    **extra,
                    "Retry-After": left,
                },
            )
        fault = next((f for f in self.faults if f.path == url.path), None)
        if fault is not None:
            self.faults.remove(fault)
            request.status = fault.status
            if fault.status == 418:
                self.banned_at = now
                self.banned_until = now + float(fault.retry_after)
                message = "Way too much request weight used; IP banned."
            else:
                message = "Too much request weight used; please use WebSocket Streams."
            return fault.status, _error(-1003, message), {**extra, "Retry-After": fault.retry_after}
        if method != "GET":
            request.status = 405
            return 405, _error(-1000, "Method not allowed."), extra
        try:
            if url.path == "/api/v3/exchangeInfo":
                return 200, self._exchange_info(params), extra
            if url.path == "/api/v3/klines":
                return 200, self._klines(params), extra
        except _BadRequest as error:
            request.status = 400
            return 400, _error(error.code, error.msg), extra
        request.status = 404
        return 404, _error(-1000, "Not found."), extra

    def _exchange_info(self, params: dict[str, str]) -> dict[str, Any]:
        if "symbol" in params:
            wanted = [params["symbol"]]
        elif "symbols" in params:
            wanted = json.loads(params["symbols"])
        else:
            wanted = list(self.specs)
        if any(s not in self.specs for s in wanted):
            raise _BadRequest(-1121, "Invalid symbol.")
        return {
            "timezone": "UTC",
            "serverTime": self.now,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_info(self.specs[s]) for s in wanted],
        }

    def _klines(self, params: dict[str, str]) -> list[list[Any]]:
        symbol = params.get("symbol", "")
        if symbol not in self.specs:
            raise _BadRequest(-1121, "Invalid symbol.")
        try:
            interval = Interval.parse(params["interval"])
        except (KeyError, ValueError):
            raise _BadRequest(-1120, "Invalid interval.") from None
        limit = min(int(params.get("limit", "500")), 1000)
        opens = self.market.opens(symbol, interval, self.now)
        if "startTime" in params:
            opens = [t for t in opens if t >= int(params["startTime"])]
            if "endTime" in params:
                opens = [t for t in opens if t <= int(params["endTime"])]
            opens = opens[:limit]
        else:
            if "endTime" in params:
                opens = [t for t in opens if t <= int(params["endTime"])]
            opens = opens[-limit:]
        return [self.market.kline(symbol, interval, t, self.now).row() for t in opens]


class _BadRequest(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    418: "I'm a teapot",
    429: "Too Many Requests",
}


def _error(code: int, msg: str) -> dict[str, Any]:
    return {"code": code, "msg": msg}


def _symbol_info(spec: SymbolSpec) -> dict[str, Any]:
    return {
        "symbol": spec.symbol,
        "status": spec.status,
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": spec.tick,
                "maxPrice": "1000000.00000000",
                "tickSize": spec.tick,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": spec.step,
                "maxQty": "9000.00000000",
                "stepSize": spec.step,
            },
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


# --- harness: what a client of the service sees ------------------------------------------

StreamKey = tuple[str, int]  # (symbol, interval)


@dataclass
class Collector:
    """A SubscribeCandles client that stays connected, recording every update."""

    call: Any
    updates: list[pb.Candle] = field(default_factory=list)
    view: dict[StreamKey, dict[int, pb.Candle]] = field(default_factory=dict)
    """The newest version of every candle seen."""
    snapshot_done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: set[StreamKey] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while True:
            response = await self.call.read()
            if response is grpc.aio.EOF:
                return
            kind = response.WhichOneof("event")
            if kind == "candle":
                candle = response.candle
                series = (candle.symbol, candle.interval)
                self.updates.append(candle)
                self.view.setdefault(series, {})[candle.open_time.ToNanoseconds()] = candle
                self.dirty.add(series)
            elif kind == "snapshot_end":
                self.snapshot_done = True
            self.changed.set()

    def got(self, series: StreamKey) -> list[tuple[Any, ...]]:
        return [candle_key(c) for _, c in sorted(self.view.get(series, {}).items())]

    async def until_equal(self, truth: dict[StreamKey, list[tuple[Any, ...]]]) -> None:
        """Wait until the view of every series in ``truth`` equals it."""
        unequal = set(truth)
        self.dirty |= unequal
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    for series in self.dirty & set(truth):
                        if self.got(series) == truth[series]:
                            unequal.discard(series)
                        else:
                            unequal.add(series)
                    self.dirty.clear()
                    if not unequal:
                        return
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            details = [f"{s}: {_diff(truth[s], self.got(s))}" for s in sorted(unequal)]
            raise AssertionError(
                "subscriber differs from the truth:\n" + "\n".join(details)
            ) from None


def candle_key(candle: pb.Candle) -> tuple[Any, ...]:
    return (
        candle.open_time.ToNanoseconds(),
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.trade_count,
        candle.closed,
    )


@contextlib.asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[App]:
    """Run the service with the feed its settings name (``tests.scripted.running``
    takes a feed object; this builds the feed from ``feed=...`` like the CLI does)."""
    settings.setdefault("grpc_listen", "127.0.0.1:0")
    settings.setdefault("shutdown_grace", 1.0)
    async with App(load(**settings)) as app:
        yield app


@contextlib.asynccontextmanager
async def collecting(
    app: App, series: Sequence[tuple[str, Interval]], history: int = 1000
) -> AsyncIterator[Collector]:
    """Subscribe to ``series`` (history, then live) for the duration of the block."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        request = pb.SubscribeCandlesRequest(
            series=[pb.Series(symbol=s, interval=int(i)) for s, i in series],  # type: ignore[arg-type]
            history=history,
        )
        collector = Collector(stub.SubscribeCandles(request))
        collector.task = asyncio.create_task(collector._read())
        try:
            yield collector
        finally:
            collector.call.cancel()
            collector.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await collector.task


def truth_of(
    exchange: Exchange, series: Sequence[tuple[str, Interval]]
) -> dict[StreamKey, list[tuple[Any, ...]]]:
    """What a perfect client holds now, per series (as :func:`candle_key` tuples)."""
    return {(s, int(i)): [k.key() for k in exchange.truth(s, i)] for s, i in series}


def _diff(want: list[tuple[Any, ...]], got: list[tuple[Any, ...]]) -> str:
    wanted = {w[0]: w for w in want}
    seen = {g[0]: g for g in got}
    missing = sorted(set(wanted) - set(seen))
    extra = sorted(set(seen) - set(wanted))
    wrong = [(wanted[t], seen[t]) for t in sorted(set(wanted) & set(seen)) if wanted[t] != seen[t]]
    return f"missing {missing[:3]} extra {extra[:3]} wrong {wrong[:2]} ({len(want)} vs {len(got)})"


def stream_problems(collector: Collector) -> list[str]:
    """Duplicates or disorder in what the subscriber received, per series."""
    problems = []
    last: dict[StreamKey, tuple[int, int]] = {}
    previous: dict[tuple[StreamKey, int], pb.Candle] = {}
    for candle in collector.updates:
        series = (candle.symbol, candle.interval)
        position = (candle.open_time.ToNanoseconds(), candle.revision)
        if series in last and position <= last[series]:
            problems.append(f"{series}: {position} after {last[series]}")
        last[series] = position
        key = (series, position[0])
        before = previous.get(key)
        if before is not None and candle_key(before) == candle_key(candle):
            problems.append(f"{series}: duplicate of open time {position[0]} rev {candle.revision}")
        previous[key] = candle
    return problems
