"""The peer: the design Candlewire replaces, as a FastAPI service, for comparison.

    PEER_REDIS_URL=redis://127.0.0.1:6379/0 python -m uvicorn app:app --app-dir bench/peer \\
        --port 8000 --loop uvloop --http httptools --ws websockets --no-access-log --workers 1

What the FastAPI services did before Candlewire, kept as plain as they were:

- ``GET /api/price?symbol=BTCUSDT``: one ``HGETALL quote:<symbol>`` on Redis (the quote cache,
  ``redis.asyncio`` with hiredis) per request, answered as JSON; 404 for an unknown symbol.
- ``WebSocket /ws/candles?symbol=BTCUSDT&interval=1m``: on connect, the last 720 candles of the
  series as one JSON message (a list), then every update of the series as one JSON text message.
  Updates are encoded once per tick (one ``json.dumps``) and the same text is sent to every
  subscriber in turn (``send_text``), the broadcast loop of a connection manager.

Updates come from tickers inside the process (configured by environment variables):

- ``PEER_RATE`` (default 10): candle updates per second for each subscribed series of the
  symbols in ``PEER_CANDLE_SYMBOLS`` (default ``BTCUSDT``). Each update carries ``t_ns``, its
  creation time (``time.time_ns()``, before it is encoded), so a client measures the latency
  from creation to arrival.
- ``PEER_QUOTE_RATE`` (default 10): rounds per second of quote updates written to Redis for the
  20 symbols (one pipeline of ``HSET``), seeded at start-up.
- ``PEER_HISTORY`` (default 720): candles sent on connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "EURUSD", "GBPUSD", "USDJPY", "XRPUSDT", "ADAUSDT",
    "DOGEUSDT", "AVAXUSDT", "DOTUSDT", "LINKUSDT", "LTCUSDT", "BCHUSDT", "TRXUSDT", "ATOMUSDT",
    "NEARUSDT", "APTUSDT", "ARBUSDT", "OPUSDT",
)  # fmt: skip
BASE_PRICES = {s: 10.0 ** (i % 5) * (1 + i / 7) for i, s in enumerate(SYMBOLS)} | {
    "BTCUSDT": 65_000.0,
    "ETHUSDT": 3_400.0,
    "EURUSD": 1.08,
}
INTERVALS = {"1s": 1, "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14_400, "1d": 86_400}

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
RATE = float(os.environ.get("PEER_RATE", "10"))
QUOTE_RATE = float(os.environ.get("PEER_QUOTE_RATE", "10"))
CANDLE_SYMBOLS = frozenset(os.environ.get("PEER_CANDLE_SYMBOLS", "BTCUSDT").split(","))
HISTORY = int(os.environ.get("PEER_HISTORY", "720"))

Series = tuple[str, str]


def quote_key(symbol: str) -> str:
    return f"quote:{symbol}"


class Candles:
    """The candles of each series: a history built at first use and the forming candle."""

    def __init__(self) -> None:
        self.history: dict[Series, list[dict[str, Any]]] = {}
        self.forming: dict[Series, dict[str, Any]] = {}

    def of(self, series: Series) -> list[dict[str, Any]]:
        if series not in self.history:
            symbol, interval = series
            step = INTERVALS[interval]
            now = int(time.time()) // step * step
            price = BASE_PRICES[symbol]
            rows = []
            for k in range(HISTORY, 0, -1):
                open_ = price
                price *= 1 + random.uniform(-0.001, 0.001)
                rows.append(
                    {
                        "symbol": symbol,
                        "interval": interval,
                        "open_time": (now - k * step) * 1000,
                        "open": round(open_, 6),
                        "high": round(max(open_, price) * 1.0005, 6),
                        "low": round(min(open_, price) * 0.9995, 6),
                        "close": round(price, 6),
                        "volume": round(random.uniform(1, 100), 4),
                        "closed": True,
                    }
                )
            self.history[series] = rows
            self.forming[series] = {
                "symbol": symbol,
                "interval": interval,
                "open_time": now * 1000,
                "open": round(price, 6),
                "high": round(price, 6),
                "low": round(price, 6),
                "close": round(price, 6),
                "volume": 0.0,
                "closed": False,
            }
        return self.history[series]

    def tick(self, series: Series) -> dict[str, Any]:
        """The series' forming candle after one more trade, stamped with its creation time."""
        candle = self.forming[series]
        price = round(candle["close"] * (1 + random.uniform(-0.0002, 0.0002)), 6)
        candle["close"] = price
        candle["high"] = max(candle["high"], price)
        candle["low"] = min(candle["low"], price)
        candle["volume"] = round(candle["volume"] + random.uniform(0.01, 1), 4)
        return candle | {"t_ns": time.time_ns()}


class Broadcaster:
    """The connection manager: sockets per series, one encoding per update."""

    def __init__(self) -> None:
        self.subscribers: dict[Series, set[WebSocket]] = {}

    def add(self, series: Series, websocket: WebSocket) -> None:
        self.subscribers.setdefault(series, set()).add(websocket)

    def remove(self, series: Series, websocket: WebSocket) -> None:
        self.subscribers.get(series, set()).discard(websocket)

    async def broadcast(self, series: Series, update: dict[str, Any]) -> None:
        text = json.dumps(update)  # encoded once per tick
        for websocket in list(self.subscribers.get(series, ())):
            try:
                await websocket.send_text(text)
            except Exception:  # a socket closed under us: drop it, as the services did
                self.remove(series, websocket)


candles = Candles()
broadcaster = Broadcaster()


async def every(rate: float, step: Callable[[], Awaitable[None]]) -> None:
    """Call ``step`` ``rate`` times a second on the loop's clock, without bursts."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    due = loop.time()
    while True:
        due += period
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -period:
            due = loop.time()
        await step()


async def candle_tick() -> None:
    for series, sockets in list(broadcaster.subscribers.items()):
        if sockets and series[0] in CANDLE_SYMBOLS:
            await broadcaster.broadcast(series, candles.tick(series))


def quote(mid: float) -> dict[Any, str]:  # Any: redis-py types its keys as a union
    spread = mid * 0.0001
    return {
        "bid": repr(round(mid - spread / 2, 6)),
        "ask": repr(round(mid + spread / 2, 6)),
        "last": repr(round(mid, 6)),
        "event_time": str(time.time_ns() // 1_000_000),
    }


async def write_quotes(client: redis.Redis, mids: dict[str, float]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for symbol, mid in mids.items():
            pipe.hset(quote_key(symbol), mapping=quote(mid))
        await pipe.execute()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    mids = dict(BASE_PRICES)
    await write_quotes(client, mids)  # the seed step

    async def quote_tick() -> None:
        for symbol in mids:
            mids[symbol] *= 1 + random.uniform(-0.0002, 0.0002)
        await write_quotes(client, mids)

    app.state.redis = client
    tasks = [asyncio.create_task(every(RATE, candle_tick))]
    if QUOTE_RATE > 0:
        tasks.append(asyncio.create_task(every(QUOTE_RATE, quote_tick)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await client.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/api/price")
async def price(symbol: str) -> Any:
    fields = await app.state.redis.hgetall(quote_key(symbol))
    if not fields:
        return JSONResponse({"detail": f"unknown symbol {symbol}"}, status_code=404)
    return {
        "symbol": symbol,
        "bid": float(fields["bid"]),
        "ask": float(fields["ask"]),
        "last": float(fields["last"]),
        "event_time": int(fields["event_time"]),
    }


@app.websocket("/ws/candles")
async def ws_candles(websocket: WebSocket, symbol: str, interval: str = "1m") -> None:
    if symbol not in BASE_PRICES or interval not in INTERVALS:
        await websocket.close(code=1008, reason="unknown symbol or interval")
        return
    await websocket.accept()
    series = (symbol, interval)
    await websocket.send_json(candles.of(series))
    broadcaster.add(series, websocket)
    try:
        while True:  # nothing is expected from the client; this notices it leaving
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        broadcaster.remove(series, websocket)
