"""Codec: the hand-written candle encoders are byte for byte upb's, and FrameRun
behaves as the list of its frames."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from candlewire.codec import FrameRun, candle_frame, candle_to_pb, field_bytes, kline_framer
from candlewire.domain import Candle, Interval, Source

_EDGE_DECIMALS = [
    Decimal(0),
    Decimal("-0"),
    Decimal("NaN"),
    Decimal("-NaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    Decimal("1e-300"),
    Decimal("1e-400"),  # rounds to 0.0
    Decimal("-1e-400"),  # rounds to -0.0
    Decimal("1e300"),
    Decimal("1e400"),  # rounds to inf
    Decimal("-1.5"),
    Decimal("65000.12"),
    Decimal("0.00000001"),
    Decimal("123456789.123456789"),
]
# Around every varint length boundary, the uint32/uint64 limits and past them.
_EDGE_INTS = sorted(
    {v + d for v in (0, 2**7, 2**14, 2**21, 2**28, 2**32, 2**35, 2**63, 2**64) for d in (-1, 0, 1)}
)
_EDGE_TIMES = [
    0,
    1,
    -1,
    999_999_999,
    1_000_000_000,
    -(10**9),
    -(10**9) - 1,
    1_700_000_000 * 10**9 + 5,
    2**62,
    -(2**62),
]

decimals = st.one_of(
    st.sampled_from(_EDGE_DECIMALS),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.integers(-(10**15), 10**15).map(lambda v: Decimal(v).scaleb(-8)),
)
counts = st.one_of(st.sampled_from(_EDGE_INTS), st.integers(-5, 2**64 + 5))
times = st.one_of(st.sampled_from(_EDGE_TIMES), st.integers(-(2**62), 2**62))
symbols = st.one_of(st.sampled_from(["", "BTCUSDT", "X" * 200, "A.B-C_D", "é€"]), st.text())

candles = st.builds(
    Candle,
    symbol=symbols,
    interval=st.sampled_from(Interval),
    open_time=times,
    close_time=times,
    open=decimals,
    high=decimals,
    low=decimals,
    close=decimals,
    volume=decimals,
    quote_volume=decimals,
    trade_count=counts,
    closed=st.booleans(),
    revision=counts,
    source=st.sampled_from(Source),
)


def _typical(**changes: object) -> Candle:
    values: dict[str, object] = {
        "symbol": "BTCUSDT",
        "interval": Interval.M1,
        "open_time": 1_700_000_040 * 10**9,
        "close_time": 1_700_000_100 * 10**9,
        "open": Decimal("65000.1"),
        "high": Decimal("65010"),
        "low": Decimal("64990.5"),
        "close": Decimal("65001.25"),
        "volume": Decimal("1.234"),
        "quote_volume": Decimal("80210.5"),
        "trade_count": 17,
        "closed": False,
        "revision": 16,
        "source": Source.SIMULATED,
    }
    values.update(changes)
    return Candle(**values)  # type: ignore[arg-type]


def _upb(candle: Candle) -> bytes:
    return field_bytes(1, candle_to_pb(candle).SerializeToString())


@given(candles)
@example(_typical())
@example(_typical(symbol="", trade_count=0, revision=0, closed=True))
@example(_typical(open=Decimal(0), volume=Decimal("-0"), quote_volume=Decimal("-0")))
@example(_typical(open_time=-1, close_time=-(10**9) - 1))
@example(_typical(high=Decimal("NaN"), low=Decimal("1e-400"), close=Decimal("1e400")))
@example(_typical(trade_count=2**64 - 1, revision=2**32 - 1))
@example(_typical(trade_count=2**64, revision=2**32))
@example(_typical(trade_count=-1))
@example(_typical(open=Decimal("sNaN")))
@example(_typical(symbol="X" * 100))  # a frame longer than 127 bytes
def test_candle_frame_is_byte_for_byte_upb(candle: Candle) -> None:
    try:
        expected = _upb(candle)
    except (ValueError, TypeError, OverflowError) as error:
        # What the message refuses, the encoder refuses the same way.
        with pytest.raises(type(error)):
            candle_frame(candle)
        return
    assert candle_frame(candle) == expected
    assert candle_frame(candle) == expected  # again, now from the encoder's caches


def _closed(candle: Candle) -> Candle:
    return replace(candle, closed=True, revision=0)


def _kline_args(
    candle: Candle,
) -> tuple[int, int, float, float, float, float, float, float, int, float, float]:
    c = candle
    return (
        c.open_time, c.close_time, float(c.open), float(c.high), float(c.low), float(c.close),
        float(c.volume), float(c.quote_volume), c.trade_count, float(c.buy_volume),
        float(c.buy_quote_volume),
    )  # fmt: skip


kline_times = st.one_of(times, st.integers(2**28, 2**35).map(lambda s: s * 10**9))
kline_candles = st.builds(
    Candle,
    symbol=symbols,
    interval=st.sampled_from(Interval),
    open_time=kline_times,
    close_time=kline_times,
    open=decimals,
    high=decimals,
    low=decimals,
    close=decimals,
    volume=decimals,
    quote_volume=decimals,
    trade_count=st.one_of(counts, st.integers(0, 20_000)),
    closed=st.just(True),
    revision=st.just(0),
    source=st.sampled_from(Source),
    buy_volume=st.one_of(st.just(Decimal(0)), decimals),
    buy_quote_volume=st.one_of(st.just(Decimal(0)), decimals),
)


@given(st.lists(kline_candles, min_size=1, max_size=20))
@example([_closed(_typical())])
@example([_closed(_typical(trade_count=128)), _closed(_typical(trade_count=16_384))])
@example([_closed(_typical(open_time=2**28 * 10**9, close_time=(2**35 - 1) * 10**9))])
@example([_closed(_typical(close_time=2**35 * 10**9, trade_count=0, quote_volume=Decimal(0)))])
@example([_closed(_typical(symbol="X" * 200))])
@example([_closed(_typical(buy_volume=Decimal("0.617"), buy_quote_volume=Decimal("40105.25")))])
@example([_closed(_typical(buy_volume=Decimal("0.617"), trade_count=300))])
@example([_closed(_typical(buy_volume=Decimal("-0"), buy_quote_volume=Decimal("-0")))])
@example([_closed(_typical(open_time=2**28 * 10**9, close_time=0))])
@example([_closed(_typical(open_time=t, close_time=t + 60 * 10**9)) for t in range(
    1_700_000_040 * 10**9, 1_700_000_040 * 10**9 + 600 * 10**9, 60 * 10**9)])  # fmt: skip
def test_kline_framer_is_byte_for_byte_upb(candles: list[Candle]) -> None:
    """One framer per series, as an import uses it: each frame that of the same
    closed revision-0 candle, whatever the candles before it."""
    framers = {}
    for candle in candles:
        key = (candle.symbol, int(candle.interval), int(candle.source))
        frame = framers.setdefault(key, kline_framer(*key))
        try:
            args = _kline_args(candle)
            expected = _upb(candle)
        except (ValueError, TypeError, OverflowError):
            continue  # not a kline a file can hold (float() or the message refuses it)
        assert frame(*args) == expected


frame_lists = st.lists(st.binary(max_size=300), max_size=40)


@given(frame_lists, st.data())
def test_frame_run_is_the_list_of_its_frames(frames: list[bytes], data: st.DataObject) -> None:
    run = FrameRun(b"".join(frames), [len(f) for f in frames])
    assert len(run) == len(frames)
    assert list(run) == frames
    assert run.data == b"".join(frames)
    for i in range(-len(frames), len(frames)):
        assert run[i] == frames[i]
    for i in (len(frames), -len(frames) - 1):
        with pytest.raises(IndexError):
            run[i]
    for count in range(-1, len(frames) + 2):
        assert run.prefix(count) == b"".join(frames[: max(count, 0)])

    bound = st.none() | st.integers(-len(frames) - 2, len(frames) + 2)
    step = st.none() | st.integers(-3, 3).filter(bool)
    s = slice(data.draw(bound), data.draw(bound), data.draw(step))
    part = run[s]
    assert list(part) == frames[s]
    assert len(part) == len(frames[s])
    if isinstance(part, FrameRun):  # contiguous slices stay runs, sliceable again
        assert part.data == b"".join(frames[s])
        inner = slice(data.draw(bound), data.draw(bound))
        assert list(part[inner]) == frames[s][inner]
        count = data.draw(st.integers(0, len(frames) + 1))
        assert part.prefix(count) == b"".join(frames[s][:count])
