"""Protobuf encoding of domain objects, done once per object.

A stored candle is kept as its *frame*: the bytes of field 1 (``candle`` /
``candles``) of ``SubscribeCandlesResponse`` and ``GetCandlesResponse``, that
is tag, length and the serialized ``marketdata.v1.Candle``. Responses are then
assembled by concatenating frames, so a candle is serialized once however many
clients receive it. The protobuf wire format guarantees that concatenated
fields parse as one message.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from decimal import Decimal
from itertools import accumulate
from typing import Protocol, overload

from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.domain import NANOS_PER_SECOND, Candle, Interval, Quote, SeriesKey, Trade
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

__all__ = [
    "FrameRun",
    "KlineFramer",
    "candle_frame",
    "candle_to_pb",
    "field_bytes",
    "frame_to_candle",
    "kline_frame",
    "kline_framer",
    "quote_to_price",
    "series_from_pb",
    "timestamp",
    "timestamp_ns",
    "trade_frame",
    "trade_to_pb",
]


def timestamp(ns: int) -> Timestamp:
    """A protobuf Timestamp of integer nanoseconds since the epoch."""
    seconds, nanos = divmod(ns, NANOS_PER_SECOND)
    return Timestamp(seconds=seconds, nanos=nanos)


def timestamp_ns(ts: Timestamp) -> int:
    """Integer nanoseconds since the epoch of a protobuf Timestamp."""
    return ts.seconds * NANOS_PER_SECOND + ts.nanos


def _varint(value: int) -> bytes:
    if 1 << 28 <= value < 1 << 35:  # seconds since the epoch, in timestamps: five bytes
        return bytes(
            (
                value & 0x7F | 0x80,
                value >> 7 & 0x7F | 0x80,
                value >> 14 & 0x7F | 0x80,
                value >> 21 & 0x7F | 0x80,
                value >> 28,
            )
        )
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
        interval=int(candle.interval),  # type: ignore[arg-type]
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
        buy_volume=float(candle.buy_volume),
        buy_quote_volume=float(candle.buy_quote_volume),
    )


# Hand-written encoding of marketdata.v1.Candle, byte for byte what upb's
# SerializeToString produces (fields in number order, proto3 zero values
# omitted, a double omitted only when its bits are all zero, timestamps always
# present), at a fraction of the cost of building the message. Values a
# message would refuse (counts out of range) take the protobuf path, which
# raises as before.
_DOUBLE = struct.Struct("<d")
_OHLCV = struct.Struct("<BdBdBdBdBd")  # fields 5-9, all non-zero: the usual case
_TAG_OPEN, _TAG_HIGH, _TAG_LOW, _TAG_CLOSE, _TAG_VOLUME = 0x29, 0x31, 0x39, 0x41, 0x49
_TAG_BUY, _TAG_BUY_QUOTE = b"\xc1\x02", b"\xc9\x02"  # fields 40 and 41, doubles
_SMALL = [bytes([v]) for v in range(128)]
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_prefixes: dict[tuple[str, int], bytes] = {}  # (symbol, interval) -> fields 1 and 2
_times: dict[tuple[int, int], bytes] = {}  # (tag, ns) -> timestamp field (a small cache)
_TIMES_MAX = 4096
# Decimal -> float goes through a string (~0.5 us); prices repeat across the
# revisions of a candle and across intervals, so conversions are memoised.
_floats: dict[Decimal, float] = {}
_FLOATS_MAX = 65536


def _float(value: Decimal) -> float:
    try:
        found = _floats.get(value)
    except TypeError:  # a signalling NaN cannot be hashed; float() raises as before
        return float(value)
    if found is None:
        found = float(value)
        if found:  # never zeros: Decimal("-0") == Decimal("0"), but their doubles differ
            if len(_floats) >= _FLOATS_MAX:
                _floats.clear()
            _floats[value] = found
    return found


def _uvarint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    if value < 16384:
        return bytes((value & 0x7F | 0x80, value >> 7))
    return _varint(value)


def _prefix(symbol: str, interval: int) -> bytes:
    key = (symbol, interval)
    prefix = _prefixes.get(key)
    if prefix is None:
        raw = symbol.encode()
        prefix = (field_bytes(1, raw) if raw else b"") + (
            b"\x10" + _uvarint(interval) if interval else b""
        )
        if len(_prefixes) < 65536:
            _prefixes[key] = prefix
    return prefix


def _time_field(tag: int, ns: int) -> bytes:
    key = (tag, ns)
    found = _times.get(key)
    if found is None:
        seconds, nanos = divmod(ns, NANOS_PER_SECOND)
        body = (b"\x08" + _varint(seconds & _U64) if seconds else b"") + (
            b"\x10" + _varint(nanos) if nanos else b""
        )
        found = bytes((tag, len(body))) + body
        if len(_times) >= _TIMES_MAX:
            _times.clear()
        _times[key] = found
    return found


def _double(tag: int, value: float) -> bytes:
    if value == 0.0 and math.copysign(1.0, value) > 0:
        return b""  # +0.0 is the default and is not written; -0.0 is
    return bytes((tag,)) + _DOUBLE.pack(value)


def _double2(tag: bytes, value: float) -> bytes:
    """A double field with a two-byte tag (field numbers 16 to 2047)."""
    if value == 0.0 and math.copysign(1.0, value) > 0:
        return b""
    return tag + _DOUBLE.pack(value)


def _encode_candle(candle: Candle) -> bytes:
    o = _float(candle.open)
    h = _float(candle.high)
    lo = _float(candle.low)
    c = _float(candle.close)
    v = float(candle.volume)  # volumes grow with every trade: not worth memoising
    if o and h and lo and c and v:
        prices = _OHLCV.pack(
            _TAG_OPEN, o, _TAG_HIGH, h, _TAG_LOW, lo, _TAG_CLOSE, c, _TAG_VOLUME, v
        )
    else:
        prices = (
            _double(_TAG_OPEN, o)
            + _double(_TAG_HIGH, h)
            + _double(_TAG_LOW, lo)
            + _double(_TAG_CLOSE, c)
            + _double(_TAG_VOLUME, v)
        )
    count = candle.trade_count
    revision = candle.revision
    source = int(candle.source)
    quote_volume = float(candle.quote_volume)
    return b"".join(
        (
            _prefix(candle.symbol, int(candle.interval)),
            _time_field(0x1A, candle.open_time),
            _time_field(0x22, candle.close_time),
            prices,
            b"P" + _uvarint(count) if count else b"",
            b"X\x01" if candle.closed else b"",
            b"`" + _uvarint(revision) if revision else b"",
            b"h" + _uvarint(source) if source else b"",
            b"q" + _DOUBLE.pack(quote_volume) if quote_volume else _double(0x71, quote_volume),
            _double2(_TAG_BUY, float(candle.buy_volume)),
            _double2(_TAG_BUY_QUOTE, float(candle.buy_quote_volume)),
        )
    )


def candle_frame(candle: Candle) -> bytes:
    """The candle as field 1 of a response message (see module docstring)."""
    if not (0 <= candle.trade_count <= _U64 and 0 <= candle.revision <= _U32):
        return field_bytes(1, candle_to_pb(candle).SerializeToString())  # raises as it did
    payload = _encode_candle(candle)
    size = len(payload)
    return (b"\n" + _SMALL[size] if size < 128 else b"\n" + _varint(size)) + payload


def _plain_time(tag: int, ns: int) -> bytes:
    seconds, nanos = divmod(ns, NANOS_PER_SECOND)
    body = (b"\x08" + _varint(seconds & _U64) if seconds else b"") + (
        b"\x10" + _varint(nanos) if nanos else b""
    )
    return bytes((tag, len(body))) + body


def kline_frame(
    symbol: str,
    interval: int,
    open_time: int,
    close_time: int,
    prices: tuple[float, float, float, float, float],
    quote_volume: float,
    trade_count: int,
    source: int,
    buy_volume: float = 0.0,
    buy_quote_volume: float = 0.0,
) -> bytes:
    """The frame of a closed revision-0 candle given as doubles (open, high,
    low, close, volume; the taker-buy volumes): byte for byte :func:`candle_frame`
    of the same candle with decimals whose doubles these are. Bulk loads use it
    to skip building a :class:`~candlewire.domain.Candle` per row."""
    o, h, lo, c, v = prices
    if o and h and lo and c and v:
        body = _OHLCV.pack(_TAG_OPEN, o, _TAG_HIGH, h, _TAG_LOW, lo, _TAG_CLOSE, c, _TAG_VOLUME, v)
    else:
        body = (
            _double(_TAG_OPEN, o)
            + _double(_TAG_HIGH, h)
            + _double(_TAG_LOW, lo)
            + _double(_TAG_CLOSE, c)
            + _double(_TAG_VOLUME, v)
        )
    if not 0 <= trade_count <= _U64:
        raise ValueError(f"trade count {trade_count} out of range")
    payload = b"".join(
        (
            _prefix(symbol, interval),
            _plain_time(0x1A, open_time),
            _plain_time(0x22, close_time),
            body,
            b"P" + _uvarint(trade_count) if trade_count else b"",
            b"X\x01",
            b"h" + _uvarint(source) if source else b"",
            b"q" + _DOUBLE.pack(quote_volume) if quote_volume else _double(0x71, quote_volume),
            _double2(_TAG_BUY, buy_volume),
            _double2(_TAG_BUY_QUOTE, buy_quote_volume),
        )
    )
    size = len(payload)
    return (b"\n" + _SMALL[size] if size < 128 else b"\n" + _varint(size)) + payload


_LOW14 = [bytes((v & 0x7F | 0x80, v >> 7 | 0x80)) for v in range(16384)]


class KlineFramer(Protocol):
    """What :func:`kline_framer` returns."""

    def __call__(
        self,
        open_time: int,
        close_time: int,
        o: float,
        h: float,
        lo: float,
        c: float,
        v: float,
        quote_volume: float,
        trade_count: int,
        buy_volume: float = 0.0,
        buy_quote_volume: float = 0.0,
    ) -> bytes: ...


def kline_framer(symbol: str, interval: int, source: int) -> KlineFramer:
    """:func:`kline_frame` for many candles of one series: ``frame(open_time,
    close_time, open, high, low, close, volume, quote_volume, trade_count,
    buy_volume=0.0, buy_quote_volume=0.0)``, byte for byte the same. What every
    frame shares is encoded once, and the usual candle (whole seconds since
    1978, non-zero values, fewer than 16,384 trades, both taker-buy volumes
    given or both +0.0) is packed by one ``struct`` call; anything else takes
    :func:`kline_frame`."""
    prefix = _prefix(symbol, interval)
    tail = b"X\x01" + (b"h" + _uvarint(source) if source else b"") + b"q"
    # field 1's tag and length, prefix, open and close times (a five-byte
    # varint of seconds, as its low 14 bits and the rest), fields 5-9, the
    # trade count (one or two bytes), closed, source, quote volume, and with
    # taker-buy volumes fields 40 and 41 (two-byte tags).
    layout = f"<BB{len(prefix)}s3s2s3s3s2s3sBdBdBdBdBdB{{}}{len(tail)}sd"
    packs = []
    for buys in ("", "2sd2sd"):
        for count_bytes in (1, 2):
            packer = struct.Struct(layout.format("B" * count_bytes) + buys)
            size = packer.size - 2
            if size >= 128:  # a symbol too long for the one-byte length: the general path
                return _kline_general(symbol, interval, source)
            packs.append((packer.pack, size))
    (one, one_size), (two, two_size), (one_b, one_b_size), (two_b, two_b_size) = packs
    tag_buy, tag_buy_quote = _TAG_BUY, _TAG_BUY_QUOTE
    low14 = _LOW14
    highs: dict[int, bytes] = {}
    billion = NANOS_PER_SECOND
    first, stop = 1 << 28, 1 << 35
    t_open, t_close = b"\x1a\x06\x08", b'"\x06\x08'
    copysign = math.copysign

    def high21(value: int) -> bytes:
        found = highs.get(value)
        if found is None:
            if len(highs) >= 4096:
                highs.clear()
            found = highs[value] = bytes(
                (value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14)
            )
        return found

    def frame(
        open_time: int,
        close_time: int,
        o: float,
        h: float,
        lo: float,
        c: float,
        v: float,
        quote_volume: float,
        trade_count: int,
        buy_volume: float = 0.0,
        buy_quote_volume: float = 0.0,
    ) -> bytes:
        open_s, open_n = divmod(open_time, billion)
        close_s, close_n = divmod(close_time, billion)
        if buy_volume and buy_quote_volume:
            buys = True
        elif buy_volume or buy_quote_volume:
            buys = None  # one of them only: the general path
        else:
            # both zero: left out unless negative (as candle_frame does)
            buys = (
                None
                if copysign(1.0, buy_volume) < 0 or copysign(1.0, buy_quote_volume) < 0
                else False
            )
        if (
            buys is None
            or open_n
            or close_n
            or not (first <= open_s < stop and first <= close_s < stop)
            or not (o and h and lo and c and v and quote_volume)
            or not 0 < trade_count < 16384
        ):
            return kline_frame(
                symbol, interval, open_time, close_time, (o, h, lo, c, v), quote_volume,
                trade_count, source, buy_volume, buy_quote_volume,
            )  # fmt: skip
        open_high = highs.get(open_s >> 14) or high21(open_s >> 14)
        close_high = highs.get(close_s >> 14) or high21(close_s >> 14)
        if buys:
            if trade_count < 128:
                return one_b(
                    0x0A, one_b_size, prefix,
                    t_open, low14[open_s & 0x3FFF], open_high,
                    t_close, low14[close_s & 0x3FFF], close_high,
                    _TAG_OPEN, o, _TAG_HIGH, h, _TAG_LOW, lo, _TAG_CLOSE, c, _TAG_VOLUME, v,
                    0x50, trade_count, tail, quote_volume,
                    tag_buy, buy_volume, tag_buy_quote, buy_quote_volume,
                )  # fmt: skip
            return two_b(
                0x0A, two_b_size, prefix,
                t_open, low14[open_s & 0x3FFF], open_high,
                t_close, low14[close_s & 0x3FFF], close_high,
                _TAG_OPEN, o, _TAG_HIGH, h, _TAG_LOW, lo, _TAG_CLOSE, c, _TAG_VOLUME, v,
                0x50, trade_count & 0x7F | 0x80, trade_count >> 7, tail, quote_volume,
                tag_buy, buy_volume, tag_buy_quote, buy_quote_volume,
            )  # fmt: skip
        if trade_count < 128:
            return one(
                0x0A, one_size, prefix,
                t_open, low14[open_s & 0x3FFF], open_high,
                t_close, low14[close_s & 0x3FFF], close_high,
                _TAG_OPEN, o, _TAG_HIGH, h, _TAG_LOW, lo, _TAG_CLOSE, c, _TAG_VOLUME, v,
                0x50, trade_count, tail, quote_volume,
            )  # fmt: skip
        return two(
            0x0A, two_size, prefix,
            t_open, low14[open_s & 0x3FFF], open_high,
            t_close, low14[close_s & 0x3FFF], close_high,
            _TAG_OPEN, o, _TAG_HIGH, h, _TAG_LOW, lo, _TAG_CLOSE, c, _TAG_VOLUME, v,
            0x50, trade_count & 0x7F | 0x80, trade_count >> 7, tail, quote_volume,
        )  # fmt: skip

    return frame


def _kline_general(symbol: str, interval: int, source: int) -> KlineFramer:
    def frame(
        open_time: int,
        close_time: int,
        o: float,
        h: float,
        lo: float,
        c: float,
        v: float,
        quote_volume: float,
        trade_count: int,
        buy_volume: float = 0.0,
        buy_quote_volume: float = 0.0,
    ) -> bytes:
        return kline_frame(
            symbol, interval, open_time, close_time, (o, h, lo, c, v), quote_volume,
            trade_count, source, buy_volume, buy_quote_volume,
        )  # fmt: skip

    return frame


def frame_to_candle(frame: bytes) -> pb.Candle:
    """Parse a frame back into a ``marketdata.v1.Candle`` (tests and tools)."""
    return pb.GetCandlesResponse.FromString(frame).candles[0]


def trade_to_pb(trade: Trade) -> pb.Trade:
    return pb.Trade(
        symbol=trade.symbol,
        trade_id=trade.trade_id,
        price=_float(trade.price),
        quantity=float(trade.quantity),
        side=int(trade.side),  # type: ignore[arg-type]
        event_time=timestamp(trade.time),
        receive_time=timestamp(trade.receive_time) if trade.receive_time else None,
        source=trade.source.value,  # type: ignore[arg-type]
    )


def trade_frame(trade: Trade) -> bytes:
    """The trade as field 1 (``trade`` / ``trades``) of a response message."""
    return field_bytes(1, trade_to_pb(trade).SerializeToString())


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
        market_state=quote.market_state.value,  # type: ignore[arg-type]
        price_type=quote.price_type.value,  # type: ignore[arg-type]
    )


def series_from_pb(series: pb.Series) -> SeriesKey:
    return SeriesKey(series.symbol, Interval(series.interval))


class FrameRun(Sequence[bytes]):
    """Consecutive frames stored back to back.

    A store that keeps frames contiguously hands them out as one ``bytes``
    (``data``) and their lengths: a response is then a single slice instead
    of a join of one object per candle, and no object per frame is made
    unless a caller indexes or iterates (the frame offsets are only summed
    then, too).
    """

    __slots__ = ("_ends", "_lengths", "data")

    def __init__(self, data: bytes, lengths: Sequence[int]) -> None:
        self.data = data
        self._lengths = lengths
        self._ends: list[int] | None = None

    def __len__(self) -> int:
        return len(self._lengths)

    def _offsets(self) -> list[int]:
        ends = self._ends
        if ends is None:
            ends = self._ends = list(accumulate(self._lengths))
        return ends

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        ends = self._offsets()
        if isinstance(index, slice):
            start, stop, step = index.indices(len(ends))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            if start >= stop:
                return FrameRun(b"", ())
            first = ends[start - 1] if start else 0
            return FrameRun(self.data[first : ends[stop - 1]], self._lengths[start:stop])
        if index < 0:
            index += len(ends)
        if not 0 <= index < len(ends):
            raise IndexError("frame index out of range")
        return self.data[ends[index - 1] if index else 0 : ends[index]]

    def __iter__(self) -> Iterator[bytes]:
        data = self.data
        start = 0
        for length in self._lengths:
            end = start + length
            yield data[start:end]
            start = end

    def prefix(self, count: int) -> bytes:
        """The first ``count`` frames (all when there are fewer), concatenated."""
        lengths = self._lengths
        if count >= len(lengths):
            return self.data
        if count <= 0:
            return b""
        return self.data[: self._offsets()[count - 1]]
