# ruff: noqa: N815, E741
"""Binance spot wire formats, and their translation into domain types.

Every model here names its fields exactly as Binance does (``E``, ``k``,
``tickSize`` ...), so a model reads like the venue's documentation
(https://developers.binance.com/docs/binance-spot-api-docs). This is the only
module that knows both the wire and the domain: the functions at the bottom
turn wire models into :class:`~candlewire.domain.Candle`,
:class:`~candlewire.domain.Quote` and :class:`~candlewire.domain.Instrument`.

Times on the wire are integer milliseconds since the epoch; the domain uses
nanoseconds. Prices and quantities are decimal strings on the wire and
:class:`~decimal.Decimal` in the domain, so nothing is rounded on the way.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from candlewire.domain import (
    NANOS_PER_MILLI,
    Candle,
    Instrument,
    Interval,
    Quote,
    Side,
    Source,
    Trade,
)
from candlewire.feeds.binance.errors import BinanceError

__all__ = [
    "BookTicker",
    "ExchangeInfo",
    "KlineEvent",
    "KlinePayload",
    "KlineRow",
    "RateLimit",
    "ServerShutdown",
    "StreamError",
    "StreamEvent",
    "StreamResponse",
    "SymbolFilter",
    "SymbolInfo",
    "TradeEvent",
    "decode_klines",
    "decode_stream_message",
    "instrument",
    "kline_candle",
    "precision",
    "quote",
    "row_candle",
    "trade",
    "weight_limit",
]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- REST: GET /api/v3/exchangeInfo -------------------------------------------------------


class RateLimit(_Wire):
    """One entry of ``rateLimits``: ``{"rateLimitType": "REQUEST_WEIGHT", ...}``."""

    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class SymbolFilter(_Wire):
    """One entry of a symbol's ``filters``; only the fields this service reads."""

    filterType: str
    tickSize: Decimal | None = None
    """PRICE_FILTER: prices are multiples of this."""
    stepSize: Decimal | None = None
    """LOT_SIZE: quantities are multiples of this."""


class SymbolInfo(_Wire):
    """One entry of ``symbols``."""

    symbol: str
    status: str
    baseAsset: str
    quoteAsset: str
    filters: list[SymbolFilter] = []


class ExchangeInfo(_Wire):
    """The answer of ``GET /api/v3/exchangeInfo``."""

    timezone: str = "UTC"
    serverTime: int
    rateLimits: list[RateLimit] = []
    symbols: list[SymbolInfo] = []


# --- REST: GET /api/v3/klines --------------------------------------------------------------


class KlineRow(NamedTuple):
    """One row of ``GET /api/v3/klines`` (and of a data.binance.vision klines file).

    Binance documents the positions only; the names follow its comments. The
    twelfth column ("Ignore") is not read.
    """

    openTime: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closeTime: int
    quoteAssetVolume: Decimal
    numberOfTrades: int
    takerBuyBaseAssetVolume: Decimal
    takerBuyQuoteAssetVolume: Decimal


_ROW = TypeAdapter(KlineRow)
_ROWS = TypeAdapter(list[list[Any]])


def decode_klines(payload: Any) -> list[KlineRow]:
    """Validate the JSON of a klines answer (extra trailing columns are ignored)."""
    try:
        return [_ROW.validate_python(row[:11]) for row in _ROWS.validate_python(payload)]
    except ValidationError as error:
        raise BinanceError(f"malformed klines answer: {_first(error)}") from None


# --- Websocket market streams --------------------------------------------------------------


class KlinePayload(_Wire):
    """The ``k`` object of a kline event."""

    t: int
    """Kline start time (ms)."""
    T: int
    """Kline close time (ms): the last millisecond of the kline."""
    s: str
    i: str
    """Interval: ``1s``, ``1m`` ... ``1M``."""
    o: Decimal
    c: Decimal
    h: Decimal
    l: Decimal
    v: Decimal
    """Base asset volume."""
    n: int
    """Number of trades."""
    x: bool
    """Is this kline closed?"""
    q: Decimal
    """Quote asset volume."""
    V: Decimal = Decimal(0)
    """Taker buy base asset volume."""
    Q: Decimal = Decimal(0)
    """Taker buy quote asset volume."""


class KlineEvent(_Wire):
    """``<symbol>@kline_<interval>``."""

    e: Literal["kline"]
    E: int
    """Event time (ms)."""
    s: str
    k: KlinePayload


class TradeEvent(_Wire):
    """``<symbol>@trade``."""

    e: Literal["trade"]
    E: int
    s: str
    t: int
    """Trade id."""
    p: Decimal
    q: Decimal
    T: int
    """Trade time (ms)."""
    m: bool
    """Is the buyer the market maker? (Then the aggressor sold.)"""


class BookTicker(_Wire):
    """``<symbol>@bookTicker`` (spot: no event type, no event time)."""

    u: int
    """Order book update id."""
    s: str
    b: Decimal
    B: Decimal
    a: Decimal
    A: Decimal


class ServerShutdown(_Wire):
    """``{"e": "serverShutdown", "E": ...}``: reconnect as soon as possible."""

    e: Literal["serverShutdown"]
    E: int


class StreamResponse(_Wire):
    """The answer to a SUBSCRIBE request: ``{"result": null, "id": 1}``."""

    result: Any = None
    id: int | str | None = None


class StreamError(_Wire):
    """An error answer: ``{"code": 2, "msg": "Invalid request ...", "id": 1}``."""

    code: int
    msg: str
    id: int | str | None = None


StreamEvent = KlineEvent | TradeEvent | BookTicker | ServerShutdown | StreamResponse | StreamError
"""What a combined-stream connection delivers (``None`` for messages this client ignores)."""


def decode_stream_message(text: str | bytes) -> StreamEvent | None:
    """Decode one message of a combined stream (``{"stream": ..., "data": ...}``).

    Unknown streams are ignored (``None``); a known stream whose payload does
    not match its schema is a :class:`BinanceError`.
    """
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise BinanceError(f"malformed websocket message: {error}") from None
    if not isinstance(raw, dict):
        raise BinanceError(f"unexpected websocket message: {str(text)[:200]}")
    try:
        if "stream" in raw and "data" in raw:
            stream = str(raw["stream"])
            data = raw["data"]
            if "@kline_" in stream:
                return KlineEvent.model_validate(data)
            if stream.endswith("@bookTicker"):
                return BookTicker.model_validate(data)
            if stream.endswith("@trade"):
                return TradeEvent.model_validate(data)
            if isinstance(data, dict) and data.get("e") == "serverShutdown":
                return ServerShutdown.model_validate(data)
            return None
        if raw.get("e") == "serverShutdown":  # the raw-stream form
            return ServerShutdown.model_validate(raw)
        if "code" in raw and "msg" in raw:
            return StreamError.model_validate(raw)
        if "id" in raw:
            return StreamResponse.model_validate(raw)
    except ValidationError as error:
        raise BinanceError(f"malformed websocket message: {_first(error)}") from None
    return None


def _first(error: ValidationError) -> str:
    detail = error.errors()[0]
    where = ".".join(str(p) for p in detail["loc"])
    return f"{where}: {detail['msg']} (got {str(detail.get('input'))[:80]!r})"


# --- Wire -> domain ------------------------------------------------------------------------


def precision(step: Decimal | None) -> int:
    """Decimal places of a tick or step size: ``0.01000000`` -> 2, ``1.00`` -> 0."""
    if step is None or step <= 0:
        return 8
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def instrument(info: SymbolInfo) -> Instrument:
    """A symbol as the domain describes it; precision from tickSize and stepSize."""
    filters = {f.filterType: f for f in info.filters}
    price = filters.get("PRICE_FILTER")
    lot = filters.get("LOT_SIZE")
    return Instrument(
        info.symbol,
        info.baseAsset,
        info.quoteAsset,
        precision(price.tickSize if price else None),
        precision(lot.stepSize if lot else None),
        Source.LIVE,
    )


def trade(event: TradeEvent, *, receive_time: int, source: Source) -> Trade:
    """A ``@trade`` event as a trade: ``m`` (the buyer is the maker) means the
    aggressor sold, otherwise it bought."""
    return Trade(
        event.s,
        event.T * NANOS_PER_MILLI,
        event.p,
        event.q,
        source,
        Side.SELL if event.m else Side.BUY,
        str(event.t),
        receive_time,
    )


def weight_limit(info: ExchangeInfo) -> int | None:
    """The REQUEST_WEIGHT limit per minute, when exchangeInfo states one."""
    for limit in info.rateLimits:
        if limit.rateLimitType == "REQUEST_WEIGHT" and limit.interval == "MINUTE":
            return limit.limit // max(1, limit.intervalNum)
    return None


def kline_candle(k: KlinePayload, source: Source) -> Candle:
    """A websocket kline as a venue candle (``revision`` is left to the sink)."""
    return Candle(
        symbol=k.s,
        interval=Interval.parse(k.i),
        open_time=k.t * NANOS_PER_MILLI,
        close_time=(k.T + 1) * NANOS_PER_MILLI,
        open=k.o,
        high=k.h,
        low=k.l,
        close=k.c,
        volume=k.v,
        quote_volume=k.q,
        trade_count=k.n,
        closed=k.x,
        revision=0,
        source=source,
        buy_volume=k.V,
        buy_quote_volume=k.Q,
    )


def row_candle(
    symbol: str, interval: Interval, row: KlineRow, *, closed: bool, source: Source, unit: int
) -> Candle:
    """A klines row as a venue candle; ``unit`` is nanoseconds per time unit of the row
    (REST: milliseconds; data.binance.vision spot files from 2025 on: microseconds)."""
    return Candle(
        symbol=symbol,
        interval=interval,
        open_time=row.openTime * unit,
        close_time=(row.closeTime + 1) * unit,
        open=row.open,
        high=row.high,
        low=row.low,
        close=row.close,
        volume=row.volume,
        quote_volume=row.quoteAssetVolume,
        trade_count=row.numberOfTrades,
        closed=closed,
        revision=0,
        source=source,
        buy_volume=row.takerBuyBaseAssetVolume,
        buy_quote_volume=row.takerBuyQuoteAssetVolume,
    )


def quote(
    book: BookTicker, *, time: int, receive_time: int, last: Decimal | None, source: Source
) -> Quote:
    """A bookTicker as a quote. Spot bookTicker carries no event time: ``time`` is
    the newest venue event time seen for the symbol (or the receive time)."""
    return Quote(
        symbol=book.s,
        time=time,
        bid=book.b,
        ask=book.a,
        bid_size=book.B,
        ask_size=book.A,
        source=source,
        receive_time=receive_time,
        last=last,
    )
