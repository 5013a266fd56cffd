"""Python client of the Candlewire market-data service (``marketdata.v1`` over gRPC).

* :class:`CandlewireClient`: the asyncio client; :class:`Client`: the same
  methods, blocking, for scripts and notebooks. Both take the keyword options
  of :class:`ClientOptions`; the target and credentials default to
  ``CANDLEWIRE_TARGET``, ``CANDLEWIRE_API_KEY`` and ``CANDLEWIRE_BEARER_TOKEN``.
* Typed results: :class:`Candle`, :class:`CandleList` (``to_rows()``,
  ``to_pandas()``), :class:`Price`, :class:`SymbolInfo`, and the stream events
  :class:`CandleEvent`, :class:`SnapshotEnd`, :class:`Heartbeat` and
  :class:`ContinuityLost` (a stream that had to start again). Times are
  UTC datetimes; numbers are ``float`` or, with ``decimals=True``, exact
  ``Decimal``.
* Errors: :class:`CandlewireError` and one subclass per family of status codes.
* The ``candlewire-client`` command (and the ``candlewire`` command's client
  subcommands) live in :mod:`candlewire_client.cli`.

::

    from candlewire_client import Client

    with Client("localhost:50051") as client:
        candles = client.fetch_candles("BTCUSDT", "1h", start="2026-01-01")
"""

from candlewire_client.aio import (
    SERVICE_NAME,
    CandleStream,
    CandlewireClient,
    ReconnectCallback,
    TradeStream,
)
from candlewire_client.blocking import BlockingCandleStream, BlockingTradeStream, Client
from candlewire_client.errors import (
    AuthError,
    CallCancelledError,
    CandlewireError,
    DeadlineExceededError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    ServerError,
    UnavailableError,
)
from candlewire_client.models import (
    Candle,
    CandleEvent,
    CandleList,
    ContinuityLost,
    Event,
    FootprintCandle,
    Health,
    Heartbeat,
    Interval,
    IntervalLike,
    Price,
    PriceLevel,
    Rejection,
    Series,
    SeriesLike,
    Side,
    SnapshotEnd,
    Source,
    SymbolInfo,
    TimeLike,
    Trade,
    TradeEvent,
    TradeList,
    TradesContinuityLost,
    TradeStreamEvent,
    VolumeProfile,
    Watermark,
)
from candlewire_client.options import DEFAULT_TARGET, ClientOptions
from candlewire_client.retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGET",
    "SERVICE_NAME",
    "AuthError",
    "BlockingCandleStream",
    "BlockingTradeStream",
    "CallCancelledError",
    "Candle",
    "CandleEvent",
    "CandleList",
    "CandleStream",
    "CandlewireClient",
    "CandlewireError",
    "Client",
    "ClientOptions",
    "ContinuityLost",
    "DeadlineExceededError",
    "Event",
    "FieldViolation",
    "FootprintCandle",
    "Health",
    "Heartbeat",
    "Interval",
    "IntervalLike",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "Price",
    "PriceLevel",
    "ReconnectCallback",
    "Rejection",
    "ResourceExhaustedError",
    "RetryPolicy",
    "Series",
    "SeriesLike",
    "ServerError",
    "Side",
    "SnapshotEnd",
    "Source",
    "SymbolInfo",
    "TimeLike",
    "Trade",
    "TradeEvent",
    "TradeList",
    "TradeStream",
    "TradeStreamEvent",
    "TradesContinuityLost",
    "UnavailableError",
    "VolumeProfile",
    "Watermark",
    "__version__",
]
