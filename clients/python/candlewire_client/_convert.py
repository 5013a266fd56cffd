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
    FootprintCandle,
    Heartbeat,
    Interval,
    N,
    Price,
    PriceLevel,
    Rejection,
    Series,
    Side,
    SnapshotEnd,
    Source,
    SymbolInfo,
    Trade,
    TradeEvent,
    TradeStreamEvent,
    VolumeProfile,
    Watermark,
)
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

__all__ = [
    "candle_from_pb",
    "decimal_of",
    "event_from_pb",
    "from_timestamp",
    "price_from_pb",
    "profile_from_pb",
    "symbol_from_pb",
    "to_timestamp",
    "trade_event_from_pb",
    "trade_from_pb",
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
        buy_volume=number(c.buy_volume),
        buy_quote_volume=number(c.buy_quote_volume),
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
        rejections=tuple(
            Rejection(
                reason=pb.RejectReason.Name(r.reason).removeprefix("REJECT_REASON_").lower()
                if r.reason in pb.RejectReason.values()
                else str(r.reason),
                count=r.count,
                last_time=from_timestamp(r.last_time) if r.HasField("last_time") else None,
            )
            for r in s.rejections
        ),
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


def trade_from_pb(t: pb.Trade, number: Callable[[float], N]) -> Trade[N]:
    """A typed trade; ``number`` is ``float`` or :func:`decimal_of`."""
    return Trade(
        symbol=t.symbol,
        trade_id=t.trade_id,
        price=number(t.price),
        quantity=number(t.quantity),
        side=Side.from_number(t.side),
        event_time=from_timestamp(t.event_time),
        receive_time=from_timestamp(t.receive_time) if t.HasField("receive_time") else None,
        source=Source.from_number(t.source),
    )


def trade_event_from_pb(
    r: pb.SubscribeTradesResponse, number: Callable[[float], N]
) -> TradeStreamEvent[N] | None:
    """The typed event of a trade stream response (``None`` for an unknown event)."""
    kind = r.WhichOneof("event")
    if kind == "trade":
        return TradeEvent(trade_from_pb(r.trade, number), r.resume_token)
    if kind == "snapshot_end":
        return SnapshotEnd(r.resume_token)
    if kind == "heartbeat":
        return Heartbeat(from_timestamp(r.heartbeat.server_time), (), r.resume_token)
    return None


def _level(level: pb.PriceLevel, number: Callable[[float], N]) -> PriceLevel[N]:
    return PriceLevel(
        price=number(level.price),
        buy_volume=number(level.buy_volume),
        sell_volume=number(level.sell_volume),
        unknown_volume=number(level.unknown_volume),
        trade_count=level.trade_count,
    )


def profile_from_pb(
    r: pb.GetVolumeProfileResponse, number: Callable[[float], N]
) -> VolumeProfile[N]:
    """A typed volume profile (and footprint)."""
    return VolumeProfile(
        levels=tuple(_level(level, number) for level in r.levels),
        footprint=tuple(
            FootprintCandle(
                from_timestamp(c.open_time),
                from_timestamp(c.close_time),
                tuple(_level(level, number) for level in c.levels),
            )
            for c in r.footprint
        ),
        trade_count=r.trade_count,
        truncated=r.truncated,
    )
