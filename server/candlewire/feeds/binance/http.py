"""The Binance REST client: exchange information and klines, within the rate limits.

Binance counts a *request weight* per IP and minute (``GET /api/v3/klines``
weighs 2, ``GET /api/v3/exchangeInfo`` 20) and reports the count in the
``X-MBX-USED-WEIGHT-1M`` header of every answer. The :class:`RateLimiter`
keeps this client under a configured share of the limit that exchangeInfo
states (``rateLimits``: ``REQUEST_WEIGHT``): a request that would exceed it
waits for the next minute, so a bootstrap of many symbols paces itself.

When Binance still says no:

* HTTP 429 (too much weight): every request waits ``Retry-After`` seconds,
  then the request is sent again.
* HTTP 418 (the IP is banned): no request at all is sent until the ban ends
  (``Retry-After``); the ban is logged and visible in :attr:`RateLimiter.banned_for`.
* Network errors, timeouts, 5xx and WAF refusals (403) raise
  :class:`~candlewire.feeds.binance.errors.BinanceUnavailable`: the caller
  retries with backoff. Other answers raise
  :class:`~candlewire.feeds.binance.errors.BinanceError`.

Tests inject an ``httpx`` transport (or point ``base_url`` at a local server);
nothing here is monkeypatched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from candlewire.feeds.binance.errors import BinanceError, BinanceUnavailable
from candlewire.feeds.binance.schemas import ExchangeInfo, KlineRow, decode_klines

__all__ = ["KLINES_LIMIT", "BinanceHttp", "RateLimiter"]

log = logging.getLogger(__name__)

KLINES_LIMIT = 1000
"""Most klines one ``GET /api/v3/klines`` returns."""

_WEIGHT_KLINES = 2
_WEIGHT_EXCHANGE_INFO = 20
_WINDOW = 60.0  # REQUEST_WEIGHT is counted per clock minute


class RateLimiter:
    """This process's view of the IP's request weight, and the waits it implies.

    ``clock`` is wall-clock seconds (Binance's windows are clock minutes);
    ``sleep`` is injectable so tests need not wait for real minutes.
    """

    def __init__(
        self,
        *,
        share: float,
        limit: int = 6000,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self._share = share
        self._limit = limit
        self._clock = clock
        self._sleep = sleep
        self._window = -1
        self._used = 0
        self._paused_until = 0.0
        self._banned_until = 0.0

    @property
    def budget(self) -> int:
        """Weight this client allows itself per minute."""
        return max(1, math.floor(self._limit * self._share))

    @property
    def used(self) -> int:
        """Weight used in the current minute, as far as this client knows."""
        return self._used if self._window == self._minute(self._clock()) else 0

    @property
    def banned_for(self) -> float:
        """Seconds left of an IP ban (HTTP 418); 0 when not banned."""
        return max(0.0, self._banned_until - self._clock())

    def set_limit(self, limit: int) -> None:
        """Use the REQUEST_WEIGHT limit that exchangeInfo states."""
        self._limit = max(1, limit)

    def _minute(self, now: float) -> int:
        return math.floor(now / _WINDOW)

    async def acquire(self, weight: int) -> None:
        """Wait until a request of ``weight`` fits the budget, then count it."""
        while True:
            now = self._clock()
            blocked = max(self._paused_until, self._banned_until)
            if now < blocked:
                await self._sleep(blocked - now)
                continue
            minute = self._minute(now)
            if minute != self._window:
                self._window, self._used = minute, 0
            if self._used == 0 or self._used + weight <= self.budget:
                self._used += weight
                return
            wait = (minute + 1) * _WINDOW - now + 0.01
            log.info(
                "request weight %d of %d used this minute; waiting %.1fs",
                self._used,
                self.budget,
                wait,
            )
            await self._sleep(wait)

    def observe(self, used: int) -> None:
        """Take the server's count (``X-MBX-USED-WEIGHT-1M``) into account."""
        minute = self._minute(self._clock())
        if minute != self._window:
            self._window, self._used = minute, 0
        self._used = max(self._used, used)

    def pause(self, seconds: float) -> None:
        """HTTP 429: send nothing for ``seconds``."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def ban(self, seconds: float) -> None:
        """HTTP 418: the IP is banned for ``seconds``; send nothing until then."""
        self._banned_until = max(self._banned_until, self._clock() + seconds)


class BinanceHttp:
    """``GET /api/v3/exchangeInfo`` and ``GET /api/v3/klines`` over ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        *,
        weight_share: float = 0.5,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        klines_limit: int = KLINES_LIMIT,
    ) -> None:
        self.limiter = limiter or RateLimiter(share=weight_share)
        self.klines_limit = klines_limit
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        """Close the connections of the underlying ``httpx.AsyncClient``."""
        await self._client.aclose()

    async def exchange_info(self, symbols: Sequence[str] | None = None) -> ExchangeInfo:
        """Exchange rules and the given symbols (all symbols when None)."""
        params: dict[str, str] = {}
        if symbols is not None:
            if len(symbols) == 1:
                params["symbol"] = symbols[0]
            else:
                params["symbols"] = json.dumps(list(symbols), separators=(",", ":"))
        payload = await self._get("/api/v3/exchangeInfo", params, _WEIGHT_EXCHANGE_INFO)
        try:
            return ExchangeInfo.model_validate(payload)
        except ValueError as error:
            raise BinanceError(f"malformed exchangeInfo answer: {error}") from None

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[KlineRow]:
        """One page of klines, ascending; start and end bound the open time, inclusive."""
        params = {"symbol": symbol, "interval": interval, "limit": str(limit or self.klines_limit)}
        if start_ms is not None:
            params["startTime"] = str(start_ms)
        if end_ms is not None:
            params["endTime"] = str(end_ms)
        return decode_klines(await self._get("/api/v3/klines", params, _WEIGHT_KLINES))

    async def recent_klines(self, symbol: str, interval: str, count: int) -> list[KlineRow]:
        """The last ``count`` klines (the forming one included), paging backwards."""
        pages: list[list[KlineRow]] = []
        got = 0
        end: int | None = None
        while got < count:
            limit = min(self.klines_limit, count - got)
            page = await self.klines(symbol, interval, end_ms=end, limit=limit)
            if end is not None:
                page = [row for row in page if row.openTime <= end]
            pages.append(page)
            got += len(page)
            if len(page) < limit:
                break
            end = page[0].openTime - 1
        return [row for page in reversed(pages) for row in page]

    async def klines_since(self, symbol: str, interval: str, start_ms: int) -> list[KlineRow]:
        """Every kline that opens at or after ``start_ms``, paging forwards."""
        rows: list[KlineRow] = []
        start = start_ms
        while True:
            page = [
                row
                for row in await self.klines(symbol, interval, start_ms=start)
                if row.openTime >= start
            ]
            rows += page
            if len(page) < self.klines_limit:
                return rows
            start = page[-1].openTime + 1

    async def _get(self, path: str, params: dict[str, str], weight: int) -> Any:
        while True:
            await self.limiter.acquire(weight)
            try:
                response = await self._client.get(path, params=params)
            except httpx.TransportError as error:
                raise BinanceUnavailable(f"GET {path}: {type(error).__name__}: {error}") from error
            used = response.headers.get("X-MBX-USED-WEIGHT-1M")
            if used is not None and used.isdigit():
                self.limiter.observe(int(used))
            status = response.status_code
            if status == 200:
                try:
                    return response.json()
                except ValueError:
                    raise BinanceError(f"GET {path}: answer is not JSON", status=200) from None
            if status == 429:
                wait = _retry_after(response, default=_WINDOW)
                log.warning("Binance rate limit (HTTP 429) on GET %s: waiting %.0fs", path, wait)
                self.limiter.pause(wait)
                continue
            if status == 418:
                wait = _retry_after(response, default=120.0)
                if self.limiter.banned_for == 0:  # requests in flight get 418 too: log once
                    log.error(
                        "Binance banned this IP (HTTP 418) for %.0fs: "
                        "no REST request until then (%s)",
                        wait,
                        _message(response),
                    )
                self.limiter.ban(wait)
                continue
            if status >= 500 or status == 403:
                raise BinanceUnavailable(f"GET {path}: HTTP {status} {_message(response)}")
            code, message = _error(response)
            raise BinanceError(
                f"GET {path} {params}: HTTP {status} {message}", status=status, code=code
            )


def _retry_after(response: httpx.Response, *, default: float) -> float:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _error(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        return body["code"], f"{body['code']} {body.get('msg', '')}"
    return None, response.text[:200]


def _message(response: httpx.Response) -> str:
    return _error(response)[1]
