"""The exception tree of the service.

::

    CandlewireError
    ├── ConfigError            invalid settings (raised at start-up)
    ├── InvalidArgument        a request field is malformed (names the field)
    ├── UnknownSymbol          the symbol is not served by this deployment
    ├── NoData                 the symbol is served but has no data yet
    ├── DataExpired            a resume position is older than what is retained
    ├── LimitExceeded          a configured limit was hit (queue, streams)
    ├── ShuttingDown           the service is stopping
    ├── LeaseLost              an ingestor wrote without holding its lease
    └── DependencyUnavailable  the store or the upstream cannot be reached
        ├── StoreUnavailable
        └── HistoryUnavailable the history tier (PostgreSQL) cannot be reached

Errors of dependencies (Redis, HTTP, websockets) are translated into these at
the boundary of the module that talks to them. Only ``candlewire.api`` turns
them into gRPC status codes.
"""

from __future__ import annotations

__all__ = [
    "CandlewireError",
    "ConfigError",
    "DataExpired",
    "DependencyUnavailable",
    "HistoryUnavailable",
    "InvalidArgument",
    "LeaseLost",
    "LimitExceeded",
    "NoData",
    "ShuttingDown",
    "StoreUnavailable",
    "UnknownSymbol",
]


class CandlewireError(Exception):
    """Base class of every error the service raises on purpose."""


class ConfigError(CandlewireError):
    """The settings are invalid."""


class InvalidArgument(CandlewireError):
    """A request field is invalid."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class UnknownSymbol(CandlewireError):
    """The symbol is not served by this deployment."""

    def __init__(self, symbol: str, field: str = "symbol") -> None:
        shown = symbol if len(symbol) <= 64 else symbol[:64] + "..."
        super().__init__(f"unknown symbol {shown!r}")
        self.symbol = symbol
        self.field = field


class NoData(CandlewireError):
    """The symbol is served but nothing was received for it yet."""


class DataExpired(CandlewireError):
    """The requested position is no longer retained."""


class LimitExceeded(CandlewireError):
    """A configured limit was hit; ``retry_after`` is in seconds when known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(CandlewireError):
    """The service is stopping; clients should reconnect elsewhere."""


class LeaseLost(CandlewireError):
    """The store refused a write: another process holds this ingestor's lease."""


class DependencyUnavailable(CandlewireError):
    """A dependency (store, upstream) cannot be reached right now."""


class StoreUnavailable(DependencyUnavailable):
    """The store cannot be reached right now."""


class HistoryUnavailable(DependencyUnavailable):
    """The history tier (PostgreSQL) cannot be reached right now."""
