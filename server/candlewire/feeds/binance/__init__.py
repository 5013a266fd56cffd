"""The Binance spot feed.

* :mod:`~candlewire.feeds.binance.schemas`: wire formats, named as Binance names
  them, and their translation into domain types (the one place that knows both);
* :mod:`~candlewire.feeds.binance.http`: the REST client and its rate limiter;
* :mod:`~candlewire.feeds.binance.websocket`: combined-stream connections,
  reconnects and rotation;
* :mod:`~candlewire.feeds.binance.feed`: :class:`BinanceFeed`, which ties them
  into a :class:`~candlewire.feeds.base.Feed` with gap-free hand-over;
* :mod:`~candlewire.feeds.binance.errors`: its errors.
"""

from candlewire.feeds.binance.errors import BinanceError, BinanceUnavailable
from candlewire.feeds.binance.feed import BinanceConfig, BinanceFeed

__all__ = ["BinanceConfig", "BinanceError", "BinanceFeed", "BinanceUnavailable"]
