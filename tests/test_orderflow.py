"""Order flow against brute-force references on random trade tapes (exact
decimals): buy volume, delta and VWAP of candles, the volume profile and the
footprint; and GetVolumeProfile from a real server."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal, localcontext

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewire.aggregate import AggregatorConfig, SymbolAggregator
from candlewire.domain import Candle, Interval, Side, Source, Trade
from candlewire.intervals import bucket_start
from candlewire.orderflow import TapeTrade, footprint, profile
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1.marketdata_pb2_grpc import MarketDataServiceStub
from tests.scripted import ScriptedFeed, sec
from tests.trading import push, tape

S = 1_000_000_000
T0 = 1_767_225_600 * S

trades_strategy = st.lists(
    st.tuples(
        st.integers(0, 3 * 3600 * S),  # time offset
        st.integers(1, 10**7),  # price in cents
        st.integers(1, 10**6),  # quantity in thousandths
        st.sampled_from(list(Side)),
    ),
    min_size=1,
    max_size=120,
)


def as_trades(raw: list[tuple[int, int, int, int]]) -> list[Trade]:
    """Sorted by time (the aggregator's lateness is 0 here: nothing dropped)."""
    return [
        Trade("BTCUSDT", T0 + t, Decimal(p).scaleb(-2), Decimal(q).scaleb(-3), Source.LIVE, Side(s))
        for t, p, q, s in sorted(raw, key=lambda r: r[0])
    ]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=trades_strategy,
    intervals=st.lists(st.sampled_from(list(Interval)), min_size=1, max_size=4, unique=True),
)
def test_buy_volume_delta_and_vwap_match_a_brute_force_reference(
    raw: list[tuple[int, int, int, int]], intervals: list[Interval]
) -> None:
    trades = as_trades(raw)
    aggregator = SymbolAggregator("BTCUSDT", AggregatorConfig(tuple(intervals)), Source.LIVE)
    latest: dict[tuple[Interval, int], Candle] = {}
    for i in range(0, len(trades), 7):  # several calls, as a feed makes them
        for candle in aggregator.add_trades(trades[i : i + 7]):
            latest[candle.interval, candle.open_time] = candle
    for interval in intervals:
        buckets: dict[int, list[Trade]] = defaultdict(list)
        for trade in trades:
            buckets[bucket_start(interval, trade.time)].append(trade)
        for (iv, open_time), candle in latest.items():
            if iv is not interval:
                continue
            part = buckets.get(open_time, [])
            buy = sum((t.quantity for t in part if t.side is Side.BUY), Decimal(0))
            sell = sum((t.quantity for t in part if t.side is not Side.BUY), Decimal(0))
            notional = sum((t.price * t.quantity for t in part), Decimal(0))
            buy_notional = sum(
                (t.price * t.quantity for t in part if t.side is Side.BUY), Decimal(0)
            )
            assert candle.buy_volume == buy
            assert candle.buy_quote_volume == buy_notional
            assert candle.volume - candle.buy_volume == sell  # delta = buy - sell, exact
            assert 2 * candle.buy_volume - candle.volume == buy - sell
            if part:
                with localcontext() as ctx:
                    ctx.prec = 60
                    assert candle.quote_volume / candle.volume == notional / sum(
                        (t.quantity for t in part), Decimal(0)
                    )  # VWAP


def reference_levels(trades: list[TapeTrade], step: Decimal) -> dict[Decimal, tuple[Decimal, ...]]:
    levels: dict[Decimal, list[Decimal]] = {}
    for _, price, quantity, side in trades:
        with localcontext() as ctx:
            ctx.prec = 80
            level = (price / step).quantize(Decimal(1), rounding=ROUND_FLOOR) * step
        slot = levels.setdefault(level, [Decimal(0)] * 4)
        slot[{Side.BUY: 0, Side.SELL: 1, Side.UNKNOWN: 2}[side]] += quantity
        slot[3] += 1
    return {k: tuple(v) for k, v in levels.items()}


steps = st.sampled_from(
    [Decimal("0.01"), Decimal("0.25"), Decimal("1"), Decimal("7.5"), Decimal("100")]
)


@settings(max_examples=150, deadline=None)
@given(raw=trades_strategy, step=steps)
def test_volume_profile_matches_a_brute_force_reference(
    raw: list[tuple[int, int, int, int]], step: Decimal
) -> None:
    tape_ = [(t.time, t.price, t.quantity, t.side) for t in as_trades(raw)]
    got = profile(tape_, step)
    assert [level.price for level in got] == sorted(reference_levels(tape_, step))
    want = reference_levels(tape_, step)
    for level in got:
        assert (level.buy, level.sell, level.unknown, Decimal(level.count)) == want[level.price]
        assert level.price <= min(
            p for _, p, _, _ in tape_ if level.price <= p < level.price + step
        )


@settings(max_examples=100, deadline=None)
@given(
    raw=trades_strategy,
    step=steps,
    interval=st.sampled_from([Interval.M1, Interval.M15, Interval.H1, Interval.D1]),
)
def test_footprint_matches_a_brute_force_reference(
    raw: list[tuple[int, int, int, int]], step: Decimal, interval: Interval
) -> None:
    tape_ = [(t.time, t.price, t.quantity, t.side) for t in as_trades(raw)]
    random.Random(len(tape_)).shuffle(tape_)  # order does not matter
    got = footprint(tape_, step, interval)
    by_candle: dict[int, list[TapeTrade]] = defaultdict(list)
    for trade in tape_:
        by_candle[bucket_start(interval, trade[0])].append(trade)
    assert [c.open_time for c in got] == sorted(by_candle)
    for candle in got:
        want = reference_levels(by_candle[candle.open_time], step)
        assert {
            level.price: (level.buy, level.sell, level.unknown, Decimal(level.count))
            for level in candle.levels
        } == want
        assert [level.price for level in candle.levels] == sorted(want)


def ts(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // S, nanos=ns % S)


async def test_get_volume_profile_of_a_server_matches_the_reference(
    feed: ScriptedFeed, stub: MarketDataServiceStub
) -> None:
    trades = tape(random.Random(11), ["BTCUSDT"], 400)
    await push(feed, trades)
    start, end = trades[50].time, trades[350].time
    step = Decimal("0.5")
    response = await stub.GetVolumeProfile(
        pb.GetVolumeProfileRequest(
            symbol="BTCUSDT",
            start_time=ts(start),
            end_time=ts(end),
            price_step="0.5",
            interval=pb.INTERVAL_1M,
        )
    )
    chosen = [(t.time, t.price, t.quantity, t.side) for t in trades if start <= t.time < end]
    want = reference_levels(chosen, step)
    assert response.trade_count == len(chosen) and not response.truncated
    assert [Decimal(repr(level.price)) for level in response.levels] == sorted(want)
    for level in response.levels:
        buy, sell, unknown, count = want[Decimal(repr(level.price))]
        assert (level.buy_volume, level.sell_volume, level.unknown_volume) == (
            float(buy),
            float(sell),
            float(unknown),
        )
        assert level.trade_count == count
    minutes = {bucket_start(Interval.M1, t[0]) for t in chosen}
    assert [c.open_time.ToNanoseconds() for c in response.footprint] == sorted(minutes)
    assert sum(level.trade_count for c in response.footprint for level in c.levels) == len(chosen)


async def test_get_volume_profile_refuses_a_bad_step(stub: MarketDataServiceStub) -> None:
    import grpc
    import pytest

    for step in ["", "abc", "0", "-1", "nan", "inf"]:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetVolumeProfile(
                pb.GetVolumeProfileRequest(symbol="BTCUSDT", start_time=ts(sec(0)), price_step=step)
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "price_step" in (error.value.details() or "")
