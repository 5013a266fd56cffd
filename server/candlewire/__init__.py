"""Candlewire: a market-data service over gRPC.

Prices and OHLCV candles of an upstream feed (simulated, Binance, replayed
files), kept in memory or Redis and served over ``marketdata.v1``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
