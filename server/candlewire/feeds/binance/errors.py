"""Errors of the Binance feed, in the service's exception tree.

::

    CandlewireError
    ├── ConfigError               a configured symbol is unknown or not TRADING
    ├── BinanceError              Binance answered something this client cannot use:
    │                             an unexpected 4xx, a malformed payload, a refused
    │                             subscription. Not retried: it is surfaced.
    └── DependencyUnavailable
        └── BinanceUnavailable    network error, timeout, 5xx, WAF refusal: retried
                                  with backoff by the feed.

httpx and websockets errors are translated into these at the boundary of
:mod:`~candlewire.feeds.binance.http` and
:mod:`~candlewire.feeds.binance.websocket`. Rate limits (HTTP 429) and IP bans
(HTTP 418) are not errors for callers: the REST client waits them out.
"""

from __future__ import annotations

from candlewire.errors import CandlewireError, DependencyUnavailable

__all__ = ["BinanceError", "BinanceUnavailable"]


class BinanceError(CandlewireError):
    """Binance answered something this client cannot use (not retried).

    ``code`` is Binance's error code (``-1121`` ...) when the answer carried one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BinanceUnavailable(DependencyUnavailable):
    """Binance cannot be reached right now (retried with backoff)."""
