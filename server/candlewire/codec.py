"""Protobuf encoding of domain objects, done once per object.

A stored candle is kept as its *frame*: the bytes of field 1 (``candle`` /
``candles``) of ``SubscribeCandlesResponse`` and ``GetCandlesResponse``, that
is tag, length and the serialized ``marketdata.v1.Candle``. Responses are then
assembled by concatenating frames, so a candle is serialized once however many
clients receive it. The protobuf wire format guarantees that concatenated
fields parse as one message.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from candlewire._proto.marketdata.v1 import marketdata_pb2 as pb
from candlewire.domain import NANOS_PER_SECOND, Candle, Interval, Quote, SeriesKey

__all__ = [
    "candle_frame",
    "candle_to_pb",
    "field_bytes",
    "frame_to_candle",
    "quote_to_price",
    "series_from_pb",
    "timestamp",
    "timestamp_ns",
]


def timestamp(ns: int) -> Timestamp:
    """A protobuf Timestamp of integer nanoseconds since the epoch."""
    seconds, nanos = divmod(ns, NANOS_PER_SECOND)
    return Timestamp(seconds=seconds, nanos=nanos)


def timestamp_ns(ts: Timestamp) -> int:
    """Integer nanoseconds since the epoch of a protobuf Timestamp."""
    return ts.seconds * NANOS_PER_SECOND + ts.nanos


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag, length, payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def candle_to_pb(candle: Candle) -> pb.Candle:
    return pb.Candle(
        symbol=candle.symbol,
        interval=candle.interval.value,  # type: ignore[arg-type]
        open_time=timestamp(candle.open_time),
        close_time=timestamp(candle.close_time),
        open=float(candle.open),
        high=float(candle.high),
        low=float(candle.low),
        close=float(candle.close),
        volume=float(candle.volume),
        quote_volume=float(candle.quote_volume),
        trade_count=candle.trade_count,
        closed=candle.closed,
        revision=candle.revision,
        source=candle.source.value,  # type: ignore[arg-type]
    )


def candle_frame(candle: Candle) -> bytes:
    """The candle as field 1 of a response message (see module docstring)."""
    return field_bytes(1, candle_to_pb(candle).SerializeToString())


def frame_to_candle(frame: bytes) -> pb.Candle:
    """Parse a frame back into a ``marketdata.v1.Candle`` (tests and tools)."""
    return pb.GetCandlesResponse.FromString(frame).candles[0]


def quote_to_price(quote: Quote, *, stale: bool) -> pb.Price:
    return pb.Price(
        symbol=quote.symbol,
        bid=float(quote.bid),
        ask=float(quote.ask),
        mid=float(quote.mid),
        spread=float(quote.spread),
        last=float(quote.last) if quote.last is not None else 0.0,
        bid_size=float(quote.bid_size),
        ask_size=float(quote.ask_size),
        event_time=timestamp(quote.time),
        receive_time=timestamp(quote.receive_time),
        stale=stale,
        source=quote.source.value,  # type: ignore[arg-type]
    )


def series_from_pb(series: pb.Series) -> SeriesKey:
    return SeriesKey(series.symbol, Interval(series.interval))
