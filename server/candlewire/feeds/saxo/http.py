"""The OpenAPI REST client: bearer tokens, 401 refresh, and Saxo's rate limits.

Saxo limits requests per session and *service group* (the first path segment:
``ref``, ``trade``, ``port`` ...; 120 a minute by default) and per app and
day, and reports each dimension in ``X-RateLimit-<dimension>-Limit``,
``-Remaining`` and ``-Reset`` (seconds) headers
(developer.saxo/openapi/learn/rate-limiting). :class:`RateLimiter` keeps, per
service group, the dimensions' remaining counts and reset times: a group with
a dimension at 0 waits for its reset before the next request. A ``429``
waits for the reset of the dimension it exhausted (else ``Retry-After``, else a
second) and is retried up to ``max_429`` times before it is a
:class:`~candlewire.feeds.saxo.errors.SaxoUnavailable`.

A ``401`` refreshes the access token once (through the
:class:`~candlewire.feeds.saxo.oauth.TokenKeeper`) and repeats the request; a
second ``401`` means the login is gone (LoginRequired).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import httpx

from candlewire.feeds.saxo.errors import LoginRequired, SaxoError, SaxoUnavailable
from candlewire.feeds.saxo.oauth import TokenKeeper

__all__ = ["RateLimiter", "SaxoHttp", "service_group"]

log = logging.getLogger(__name__)


def service_group(path: str) -> str:
    """``/trade/v1/prices/subscriptions`` -> ``trade``."""
    return path.lstrip("/").split("/", 1)[0]


class RateLimiter:
    """Per service group: the time before which no request may be sent."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._blocked: dict[str, float] = {}
        self.waits = 0
        """Requests that waited for a reset."""
        self.limited = 0
        """429 answers received."""

    def delay(self, group: str) -> float:
        return max(0.0, self._blocked.get(group, 0.0) - self._clock())

    async def wait(self, group: str) -> None:
        delay = self.delay(group)
        if delay > 0:
            self.waits += 1
            log.info("Saxo %s rate limit: waiting %.1fs for its reset", group, delay)
            await asyncio.sleep(delay)

    def note(self, group: str, headers: Mapping[str, str], *, refused: bool) -> float:
        """Read the rate-limit headers of an answer; return the wait they impose."""
        resets: dict[str, float] = {}
        remaining: dict[str, int] = {}
        for name, value in headers.items():
            lower = name.lower()
            if not lower.startswith("x-ratelimit-"):
                continue
            dimension, _, kind = lower[len("x-ratelimit-") :].rpartition("-")
            try:
                if kind == "reset":
                    resets[dimension] = float(value)
                elif kind == "remaining":
                    remaining[dimension] = int(value)
            except ValueError:
                continue
        wait = 0.0
        for dimension, left in remaining.items():
            if left <= 0:
                wait = max(wait, resets.get(dimension, 1.0))
        if refused:
            self.limited += 1
            retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
            if wait <= 0:  # no dimension says it is exhausted: Retry-After, else a second
                try:
                    wait = float(retry_after) if retry_after else 1.0
                except ValueError:
                    wait = 1.0
            wait = max(wait, 0.05)
        if wait > 0:
            until = self._clock() + wait
            self._blocked[group] = max(self._blocked.get(group, 0.0), until)
        return wait


class SaxoHttp:
    """``request`` against ``rest_url`` with the keeper's token."""

    def __init__(
        self,
        rest_url: str,
        keeper: TokenKeeper,
        *,
        limiter: RateLimiter | None = None,
        timeout: float = 10.0,
        max_429: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = rest_url.rstrip("/")
        self._keeper = keeper
        self.limiter = limiter or RateLimiter()
        self._max_429 = max_429
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        expect: tuple[int, ...] = (200, 201),
    ) -> Any:
        """Send, wait out rate limits, refresh on 401; the decoded JSON answer (or None)."""
        group = service_group(path)
        tokens = await self._keeper.current()
        refreshed = False
        limited = 0
        while True:
            await self.limiter.wait(group)
            try:
                response = await self._client.request(
                    method,
                    self._base + path,
                    params=params,
                    json=body,
                    headers={"Authorization": f"Bearer {tokens.access_token}"},
                )
            except httpx.HTTPError as error:
                raise SaxoUnavailable(f"Saxo {method} {path}: {type(error).__name__}") from None
            status = response.status_code
            self.limiter.note(group, response.headers, refused=status == 429)
            if status == 401:
                if refreshed:
                    await self._keeper.break_chain("Saxo refused a fresh access token (HTTP 401)")
                    raise LoginRequired("Saxo refused a fresh access token (HTTP 401)")
                log.info("Saxo %s %s: HTTP 401, refreshing the access token", method, path)
                tokens = await self._keeper.refresh(tokens)
                refreshed = True
                continue
            if status == 429:
                limited += 1
                if limited > self._max_429:
                    raise SaxoUnavailable(f"Saxo {method} {path}: rate limited (HTTP 429)")
                continue
            if status in expect:
                if not response.content:
                    return None
                try:
                    # Decimals: a price in a snapshot is never rounded through a float.
                    return json.loads(response.content, parse_float=Decimal)
                except ValueError:
                    raise SaxoError(
                        f"Saxo {method} {path}: answer is not JSON", status=status
                    ) from None
            if status >= 500:
                raise SaxoUnavailable(f"Saxo {method} {path}: HTTP {status}")
            raise SaxoError(
                f"Saxo {method} {path}: HTTP {status} {_error_code(response)}".rstrip(),
                status=status,
                code=_error_code(response) or None,
            )


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    return code if isinstance(code, str) and code.isidentifier() and len(code) <= 60 else ""
