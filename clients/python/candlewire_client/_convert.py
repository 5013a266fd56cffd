"""Conversion between ``marketdata.v1`` messages and the client's typed results."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp

from candlewire_client.models import (
    Candle,
    CandleEvent,
    Event,
    Heartbeat,
    Interval,
    N,
    Price,
    Series,
    SnapshotEnd,
    Source,
    SymbolInfo,
    Watermark,
)
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

__all__ = [
    "candle_from_pb",
    "decimal_of",
    "event_from_pb",
    "from_timestamp",
    "price_from_pb",
    "symbol_from_pb",
    "to_timestamp",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decimal_of(value: float) -> Decimal:
    """The exact decimal a wire double stands for.

    The service sends the double nearest to its exact decimal; for up to 15
    significant digits the shortest representation of that double (``repr``)
    is the decimal itself.
    """
    return Decimal(repr(value))


def from_timestamp(ts: Timestamp) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime (exact to the microsecond)."""
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def to_timestamp(moment: datetime) -> Timestamp:
    """An aware datetime as a protobuf Timestamp, exactly."""
    delta = moment - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def candle_from_pb(c: pb.Candle, number: Callable[[float], N]) -> Candle[N]:
    """A typed candle; ``number`` is ``float`` or :func:`decimal_of`."""
    return Candle(
        symbol=c.symbol,
        interval=Interval.from_number(c.interval),
        open_time=from_timestamp(c.open_time),
        close_time=from_timestamp(c.close_time),
        open=number(c.open),
        high=number(c.high),
        low=number(c.low),
        close=number(c.close),
        volume=number(c.volume),
        quote_volume=number(c.quote_volume),
        trade_count=c.trade_count,
        closed=c.closed,
        revision=c.revision,
        source=Source.from_number(c.source),
    )


def price_from_pb(p: pb.Price, number: Callable[[float], N]) -> Price[N] | None:
    """A typed price, or ``None`` for the placeholder of a symbol without a quote yet."""
    if not p.HasField("receive_time"):
        return None
    return Price(
        symbol=p.symbol,
        bid=number(p.bid),
        ask=number(p.ask),
        mid=number(p.mid),
        spread=number(p.spread),
        last=number(p.last) if p.last else None,
        bid_size=number(p.bid_size),
        ask_size=number(p.ask_size),
        event_time=from_timestamp(p.event_time),
        receive_time=from_timestamp(p.receive_time),
        stale=p.stale,
        source=Source.from_number(p.source),
    )


def symbol_from_pb(s: pb.SymbolInfo) -> SymbolInfo:
    """A typed symbol description."""
    return SymbolInfo(
        symbol=s.symbol,
        base_asset=s.base_asset,
        quote_asset=s.quote_asset,
        price_precision=s.price_precision,
        quantity_precision=s.quantity_precision,
        intervals=tuple(Interval.from_number(i) for i in s.intervals),
        source=Source.from_number(s.source),
    )


def event_from_pb(r: pb.SubscribeCandlesResponse, number: Callable[[float], N]) -> Event[N] | None:
    """The typed event of a stream response (``None`` for an event this client does not know)."""
    kind = r.WhichOneof("event")
    if kind == "candle":
        return CandleEvent(candle_from_pb(r.candle, number), r.resume_token)
    if kind == "snapshot_end":
        return SnapshotEnd(r.resume_token)
    if kind == "heartbeat":
        return Heartbeat(
            server_time=from_timestamp(r.heartbeat.server_time),
            watermarks=tuple(
                Watermark(
                    Series(w.series.symbol, Interval.from_number(w.series.interval)),
                    from_timestamp(w.last_event_time) if w.HasField("last_event_time") else None,
                )
                for w in r.heartbeat.watermarks
            ),
            resume_token=r.resume_token,
        )
    return None
