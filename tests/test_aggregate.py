"""Tests of candlewire.aggregate: examples, then tapes against a brute-force reference.

The reference below shares no code with the aggregator: it buckets with
``datetime`` (calendar fields, ``weekday()``, month arithmetic) instead of
candlewire.intervals, replays the tape trade by trade to decide which trades
are late, and builds every candle from the sorted list of its trades.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewire.aggregate import AggregatorConfig, SymbolAggregator
from candlewire.domain import Candle, Interval, SeriesKey, Source, Trade
from candlewire.store.memory import MemoryStore

SYMBOL = "BTCUSDT"
S = 1_000_000_000
MS = 1_000_000
MIN = 60 * S
H = 60 * MIN
D = 24 * H
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns(text: str) -> int:
    """Nanoseconds of an ISO-8601 UTC time such as ``2024-02-29T23:59:59.999Z``."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * S + delta.microseconds * 1_000


def trade(
    time: int, price: str | Decimal, qty: str | Decimal = "1", source: Source = Source.LIVE
) -> Trade:
    return Trade(SYMBOL, time, Decimal(price), Decimal(qty), source)


def aggregator(
    *intervals: Interval, lateness: int = 0, max_gap_fill: int = 10_000
) -> SymbolAggregator:
    config = AggregatorConfig(intervals, lateness=lateness, max_gap_fill=max_gap_fill)
    return SymbolAggregator(SYMBOL, config, Source.SIMULATED)


def by_open(candles: Sequence[Candle]) -> dict[int, Candle]:
    return {candle.open_time: candle for candle in candles}


# --------------------------------------------------------------------------
# Reference implementation
# --------------------------------------------------------------------------

_MINUTES = {Interval.M1: 1, Interval.M3: 3, Interval.M5: 5, Interval.M15: 15, Interval.M30: 30}
_HOURS = {
    Interval.H1: 1,
    Interval.H2: 2,
    Interval.H4: 4,
    Interval.H6: 6,
    Interval.H8: 8,
    Interval.H12: 12,
}


def _to_datetime(time: int) -> datetime:
    return EPOCH + timedelta(microseconds=time // 1_000)


def _to_ns(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * S + delta.microseconds * 1_000


@functools.lru_cache(maxsize=1 << 16)
def ref_bucket(interval: Interval, time: int) -> tuple[int, int]:
    """``(open, close)`` of the candle holding ``time``, from calendar fields."""
    moment = _to_datetime(time)
    second = moment.replace(microsecond=0)
    midnight = second.replace(hour=0, minute=0, second=0)
    if interval is Interval.S1:
        start, end = second, second + timedelta(seconds=1)
    elif interval in _MINUTES:
        n = _MINUTES[interval]
        start = second.replace(minute=moment.minute - moment.minute % n, second=0)
        end = start + timedelta(minutes=n)
    elif interval in _HOURS:
        n = _HOURS[interval]
        start = midnight.replace(hour=moment.hour - moment.hour % n)
        end = start + timedelta(hours=n)
    elif interval is Interval.D1:
        start, end = midnight, midnight + timedelta(days=1)
    elif interval is Interval.D3:  # epoch-aligned: 1970-01-01 + 3k days
        start = midnight - timedelta(days=(midnight - EPOCH).days % 3)
        end = start + timedelta(days=3)
    elif interval is Interval.W1:  # Monday 00:00
        start = midnight - timedelta(days=midnight.weekday())
        end = start + timedelta(days=7)
    else:
        start = midnight.replace(day=1)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
    return _to_ns(start), _to_ns(end)


def ref_next(interval: Interval, start: int) -> int:
    return ref_bucket(interval, start)[1]


Op = tuple[str, object]  # ("trades", list[Trade]) or ("advance", int)


@dataclasses.dataclass
class Reference:
    now: int | None
    accepted: list[tuple[int, Trade]]  # (arrival number, trade)
    dropped: list[Trade]


def replay(ops: Sequence[Op], lateness: int) -> Reference:
    """Which trades are accepted, one trade at a time, and the final ``now``."""
    now: int | None = None
    accepted: list[tuple[int, Trade]] = []
    dropped: list[Trade] = []
    for kind, payload in ops:
        if kind == "advance":
            assert isinstance(payload, int)
            now = payload if now is None else max(now, payload)
            continue
        assert isinstance(payload, list)
        for item in payload:
            if now is not None and item.time < now - lateness:
                dropped.append(item)
                continue
            accepted.append((len(accepted), item))
            now = item.time if now is None else max(now, item.time)
    return Reference(now, accepted, dropped)


def ref_candles(interval: Interval, ref: Reference, source: Source) -> dict[int, Candle]:
    """Reference candles of ``interval``: every bucket holding trades.

    Empty buckets are answered by :func:`ref_empty`.
    """
    assert ref.now is not None
    groups: dict[int, list[tuple[int, Trade]]] = defaultdict(list)
    for arrival, item in ref.accepted:
        groups[ref_bucket(interval, item.time)[0]].append((arrival, item))
    candles = {}
    for start, members in groups.items():
        ordered = sorted(members, key=lambda m: (m[1].time, m[0]))
        prices = [m[1].price for m in ordered]
        end = ref_bucket(interval, start)[1]
        candles[start] = Candle(
            SYMBOL,
            interval,
            start,
            end,
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
            sum((m[1].quantity for m in ordered), Decimal(0)),
            sum((m[1].price * m[1].quantity for m in ordered), Decimal(0)),
            len(ordered),
            ref.now >= end,
            0,
            max(members)[1].source,  # last arrival
        )
    return candles


def ref_empty(
    interval: Interval, start: int, full: dict[int, Candle], now: int, source: Source
) -> Candle:
    """Reference candle of an empty bucket: flat at the close of the last full one before."""
    previous = max(open_time for open_time in full if open_time < start)
    close = full[previous].close
    end = ref_next(interval, start)
    zero = Decimal(0)
    return Candle(
        SYMBOL,
        interval,
        start,
        end,
        close,
        close,
        close,
        close,
        zero,
        zero,
        0,
        now >= end,
        0,
        source,
    )


def aggregate_of(parts: Sequence[Candle]) -> tuple[object, ...]:
    """OHLCV of the concatenation of ``parts`` (candles with trades, by time)."""
    return (
        parts[0].open,
        max(p.high for p in parts),
        min(p.low for p in parts),
        parts[-1].close,
        sum((p.volume for p in parts), Decimal(0)),
        sum((p.quote_volume for p in parts), Decimal(0)),
        sum(p.trade_count for p in parts),
    )


def state(candle: Candle) -> tuple[object, ...]:
    """Everything but the revision."""
    return (
        candle.symbol,
        candle.interval,
        candle.open_time,
        candle.close_time,
        *ohlcv(candle),
        candle.closed,
        candle.source,
    )


def ohlcv(candle: Candle) -> tuple[object, ...]:
    return (
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.quote_volume,
        candle.trade_count,
    )


def run_and_check(config: AggregatorConfig, ops: Sequence[Op], *, contiguous: bool) -> None:
    """Feed ``ops`` to an aggregator and check everything it emitted against the reference.

    ``contiguous``: no gap may have been capped by ``max_gap_fill``, so every
    bucket from the first trade to ``now`` must have a candle.
    """
    source = Source.SIMULATED
    agg = SymbolAggregator(SYMBOL, config, source)
    rank = {interval: i for i, interval in enumerate(config.intervals)}
    history: dict[tuple[Interval, int], list[tuple[int, Candle]]] = defaultdict(list)
    for call, (kind, payload) in enumerate(ops):
        if kind == "advance":
            assert isinstance(payload, int)
            out = agg.advance(payload)
        else:
            assert isinstance(payload, list)
            out = agg.add_trades(payload)
        order = [(rank[c.interval], c.open_time) for c in out]
        assert order == sorted(set(order)), "one snapshot per candle and call, in order"
        for candle in out:
            assert candle.symbol == SYMBOL
            history[candle.interval, candle.open_time].append((call, candle))

    ref = replay(ops, config.lateness)
    assert agg.now == ref.now
    assert agg.dropped_late == len(ref.dropped)

    # Revisions 0, 1, 2, ... one per call at most, each a real change.
    for versions in history.values():
        assert [c.revision for _, c in versions] == list(range(len(versions)))
        calls = [call for call, _ in versions]
        assert calls == sorted(set(calls))
        for (_, older), (_, newer) in pairwise(versions):
            assert state(older) != state(newer)
            assert not older.closed or newer.closed, "a closed candle never reopens"

    final = {key: versions[-1][1] for key, versions in history.items()}
    if not ref.accepted:
        assert not final
        return
    assert ref.now is not None
    cap = config.max_gap_fill
    for interval in config.intervals:
        full = ref_candles(interval, ref, source)
        emitted = {open_time: c for (iv, open_time), c in final.items() if iv is interval}
        starts = sorted(emitted)
        assert starts[0] == min(full), "the series starts at the first trade"
        assert starts[-1] == ref_bucket(interval, ref.now)[0], "and ends at now"
        assert set(full) <= set(emitted)
        for index, (a, b) in enumerate(pairwise(starts)):
            if ref_next(interval, a) == b:
                continue
            assert not contiguous, f"{interval.label}: missing buckets between {a} and {b}"
            # A capped gap: its most recent max_gap_fill buckets were filled, and
            # the candle that opened the gap follows them.
            run = starts[index + 1 : index + 2 + cap]
            assert len(run) == cap + 1
            assert all(ref_next(interval, x) == y for x, y in pairwise(run))
        for open_time, candle in emitted.items():
            expected = full.get(open_time) or ref_empty(interval, open_time, full, ref.now, source)
            assert state(candle) == state(expected), interval.label

    # Roll-up: every candle is the aggregation of the 1s candles inside it.
    if Interval.S1 in config.intervals:
        seconds = sorted(
            (c for (iv, _), c in final.items() if iv is Interval.S1 and c.trade_count),
            key=lambda c: c.open_time,
        )
        second_starts = [s.open_time for s in seconds]
        for candle in final.values():
            low = bisect_left(second_starts, candle.open_time)
            high = bisect_left(second_starts, candle.close_time)
            inside = seconds[low:high]
            if candle.trade_count:
                assert ohlcv(candle) == aggregate_of(inside)
            else:
                assert not inside
                assert candle.open == candle.high == candle.low == candle.close


# --------------------------------------------------------------------------
# Tape strategies
# --------------------------------------------------------------------------

ANCHORS = [
    ns("2024-02-29T23:59:58Z"),  # leap day, month end
    ns("2024-03-03T23:59:59Z"),  # Sunday night before a Monday 00:00
    ns("2024-12-31T23:59:57Z"),  # year end
    ns("2024-01-31T23:30:00Z"),
]

prices = st.builds(
    lambda n, scale: Decimal(n).scaleb(-scale), st.integers(1, 5_000), st.integers(0, 2)
)
quantities = st.builds(
    lambda n, scale: Decimal(n).scaleb(-scale), st.integers(0, 999), st.integers(0, 3)
)


@st.composite
def tapes(
    draw: st.DrawFn, scales: Sequence[int], latenesses: Sequence[int], final_advance: int = 40
) -> tuple[int, list[Op]]:
    """``(lateness, ops)``: trades in arrival order, batched, with watermarks."""
    lateness = draw(st.sampled_from(latenesses))
    scale = draw(st.sampled_from(scales))
    time = draw(st.sampled_from(ANCHORS)) - draw(st.integers(0, 3)) * scale
    count = draw(st.integers(1, 30))
    events: list[tuple[int, int, Trade]] = []  # (arrival key, order, trade)
    for i in range(count):
        # Often exactly on a multiple of the scale (bucket edges, ties), else anywhere.
        jitter = draw(st.one_of(st.just(0), st.integers(0, scale // 2)))
        time += draw(st.integers(0, 3)) * scale + jitter
        # Arrive up to ~1.5 lateness late: mostly in the window, sometimes dropped.
        delay = draw(st.integers(0, lateness + lateness // 2 + 1))
        item = Trade(
            SYMBOL, time, draw(prices), draw(quantities), draw(st.sampled_from(list(Source)))
        )
        events.append((time + delay, i, item))
    events.sort(key=lambda e: e[:2])
    ops: list[Op] = []
    batch: list[Trade] = []
    high = events[0][2].time
    for _, _, item in events:
        batch.append(item)
        high = max(high, item.time)
        if draw(st.booleans()):
            ops.append(("trades", batch))
            batch = []
            if draw(st.integers(0, 3)) == 0:
                ops.append(("advance", high + draw(st.integers(-2, 4)) * scale))
    if batch:
        ops.append(("trades", batch))
    if draw(st.booleans()):
        ops.insert(0, ("advance", ops_first_time(ops) - draw(st.integers(0, 2)) * scale))
    if draw(st.booleans()):
        ops.append(("advance", high + draw(st.integers(0, final_advance)) * scale))
    return lateness, ops


def ops_first_time(ops: Sequence[Op]) -> int:
    for kind, payload in ops:
        if kind == "trades":
            assert isinstance(payload, list)
            return int(payload[0].time)
    raise AssertionError("no trades")


ALL_SCALES = [MS, S, 7 * S, MIN, 13 * MIN, H, 5 * H, D, 7 * D]
ALL_LATENESSES = [0, MS, S, 90 * S, 2 * H, 3 * D]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tape=tapes(ALL_SCALES, ALL_LATENESSES),
    intervals=st.permutations(list(Interval)),
    cap=st.sampled_from([1, 3, 25]),
)
def test_tapes_match_reference_all_intervals(
    tape: tuple[int, list[Op]], intervals: list[Interval], cap: int
) -> None:
    lateness, ops = tape
    config = AggregatorConfig(tuple(intervals), lateness=lateness, max_gap_fill=cap)
    run_and_check(config, ops, contiguous=False)


LONG = [Interval.H1, Interval.H4, Interval.H12, Interval.D1, Interval.D3, Interval.W1]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tape=tapes([S, MIN, 13 * MIN, H, 5 * H, D], [0, S, 90 * S, 2 * H, 3 * D]),
    intervals=st.lists(st.sampled_from([*LONG, Interval.MO1]), min_size=1, unique=True),
)
def test_tapes_match_reference_contiguous(
    tape: tuple[int, list[Op]], intervals: list[Interval]
) -> None:
    lateness, ops = tape
    run_and_check(AggregatorConfig(tuple(intervals), lateness=lateness), ops, contiguous=True)


@settings(max_examples=80, deadline=None)
@given(
    tape=tapes([MS, 100 * MS, S, 7 * S], [0, MS, S, 10 * S], final_advance=20),
    intervals=st.one_of(
        st.just(list(Interval)), st.lists(st.sampled_from(list(Interval)), min_size=1, unique=True)
    ),
)
def test_tapes_match_reference_short(tape: tuple[int, list[Op]], intervals: list[Interval]) -> None:
    lateness, ops = tape
    config = AggregatorConfig(tuple(intervals), lateness=lateness, max_gap_fill=200)
    run_and_check(config, ops, contiguous=True)


# --------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------

T0 = ns("2024-03-01T12:00:00Z")


def test_decimal_volume_is_exact() -> None:
    agg = aggregator(Interval.M1)
    agg.add_trades([trade(T0, "10", "0.1")])
    [candle] = agg.add_trades([trade(T0 + S, "10", "0.2")])
    assert str(candle.volume) == "0.3"
    assert candle.quote_volume == Decimal("3")
    assert candle.trade_count == 2


def test_quote_volume_does_not_round() -> None:
    price, qty = Decimal("65432.123456789012"), Decimal("0.000123456789012345")
    agg = aggregator(Interval.M1)
    [candle] = agg.add_trades([trade(T0, price, qty), trade(T0 + 1, price, qty)])
    with localcontext(Context(prec=100)):
        expected = 2 * price * qty
    assert candle.quote_volume == expected
    assert len(candle.quote_volume.as_tuple().digits) > 28


def test_out_of_order_trade_sets_open() -> None:
    agg = aggregator(Interval.S1, Interval.M1, lateness=S)
    agg.add_trades([trade(T0 + 500 * MS, "100")])
    out = agg.add_trades([trade(T0 + 200 * MS, "90")])
    for candle in out:
        assert (candle.open, candle.close, candle.high, candle.low) == (
            Decimal(90),
            Decimal(100),
            Decimal(100),
            Decimal(90),
        )
        assert candle.revision == 1


def test_ties_go_to_arrival_order() -> None:
    agg = aggregator(Interval.M1, Interval.S1)
    out = agg.add_trades([trade(T0, "2"), trade(T0, "1"), trade(T0, "3"), trade(T0, "1.5")])
    assert {(c.open, c.close) for c in out} == {(Decimal(2), Decimal("1.5"))}
    out = agg.add_trades([trade(T0, "4")])
    assert {(c.open, c.close) for c in out} == {(Decimal(2), Decimal(4))}


def test_one_snapshot_per_call_in_its_final_state() -> None:
    agg = aggregator(Interval.M1, Interval.S1)
    out = agg.add_trades([trade(T0 + i * MS, str(100 + i)) for i in range(50)])
    assert [(c.interval, c.revision) for c in out] == [(Interval.M1, 0), (Interval.S1, 0)]
    assert all(c.trade_count == 50 and c.close == Decimal(149) for c in out)


def test_quiet_market_closes_via_advance() -> None:
    agg = aggregator(Interval.S1)
    [forming] = agg.add_trades([trade(T0 + 500 * MS, "100")])
    assert not forming.closed
    assert agg.advance(T0 + 999 * MS) == []
    closed, opened = agg.advance(T0 + S)
    assert (closed.open_time, closed.closed, closed.revision) == (T0, True, 1)
    assert (opened.open_time, opened.closed, opened.revision) == (T0 + S, False, 0)
    assert opened.trade_count == 0
    assert opened.volume == 0
    assert opened.close == Decimal(100)
    out = agg.advance(T0 + 3 * S + 1)
    assert [(c.open_time, c.closed, c.revision) for c in out] == [
        (T0 + S, True, 1),
        (T0 + 2 * S, True, 0),
        (T0 + 3 * S, False, 0),
    ]
    assert agg.now == T0 + 3 * S + 1


def test_empty_candles_take_previous_close_and_source() -> None:
    agg = aggregator(Interval.M1)
    agg.add_trades([trade(T0, "100", source=Source.LIVE), trade(T0 + 1, "101")])
    out = agg.add_trades([trade(T0 + 3 * MIN, "105", source=Source.REPLAY)])
    assert [c.open_time for c in out] == [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    assert out[0].source is Source.LIVE
    for empty in out[1:3]:
        assert (empty.open, empty.high, empty.low, empty.close) == (Decimal(101),) * 4
        assert (empty.volume, empty.quote_volume, empty.trade_count) == (Decimal(0), Decimal(0), 0)
        assert empty.source is Source.SIMULATED
        assert empty.closed
    assert (out[3].open, out[3].source, out[3].closed) == (Decimal(105), Source.REPLAY, False)


def test_trade_into_empty_placeholder_makes_it_real() -> None:
    agg = aggregator(Interval.M1, lateness=5 * MIN)
    agg.add_trades([trade(T0, "100")])
    agg.advance(T0 + 3 * MIN)
    [real, *following] = agg.add_trades([trade(T0 + MIN + 5, "90", "2", Source.BACKFILL)])
    assert real.open_time == T0 + MIN
    assert (real.open, real.high, real.low, real.close) == (Decimal(90),) * 4
    assert (real.volume, real.trade_count, real.revision, real.closed) == (Decimal(2), 1, 1, True)
    assert real.source is Source.BACKFILL
    # The empty candles after it now stand at its close.
    assert [(c.open_time, c.close, c.revision) for c in following] == [
        (T0 + 2 * MIN, Decimal(90), 1),
        (T0 + 3 * MIN, Decimal(90), 1),
    ]


def test_late_trade_corrects_and_cascades() -> None:
    agg = aggregator(Interval.S1, Interval.M1, lateness=5 * S)
    agg.add_trades([trade(T0 + 100 * MS, "100")])
    agg.advance(T0 + 3 * S + 500 * MS)
    out = agg.add_trades([trade(T0 + 900 * MS, "105", "2")])
    seconds = [c for c in out if c.interval is Interval.S1]
    assert [(c.open_time, c.close, c.revision, c.closed) for c in seconds] == [
        (T0, Decimal(105), 2, True),
        (T0 + S, Decimal(105), 1, True),
        (T0 + 2 * S, Decimal(105), 1, True),
        (T0 + 3 * S, Decimal(105), 1, False),
    ]
    assert seconds[0].volume == 3
    [minute] = [c for c in out if c.interval is Interval.M1]
    assert (minute.close, minute.revision) == (Decimal(105), 1)
    # A late trade that leaves the close alone changes only its own candle.
    out = agg.add_trades([trade(T0 + 50 * MS, "99")])
    assert [(c.interval, c.open_time, c.revision) for c in out] == [
        (Interval.S1, T0, 3),
        (Interval.M1, T0, 2),
    ]
    assert out[0].open == Decimal(99)
    assert out[0].close == Decimal(105)


def test_cascade_stops_at_next_candle_with_trades() -> None:
    agg = aggregator(Interval.S1, lateness=10 * S)
    agg.add_trades([trade(T0, "100"), trade(T0 + 2 * S, "200")])
    agg.advance(T0 + 4 * S)
    out = agg.add_trades([trade(T0 + 500 * MS, "150")])
    assert [(c.open_time, c.close) for c in out] == [(T0, Decimal(150)), (T0 + S, Decimal(150))]


def test_too_late_trade_is_dropped() -> None:
    agg = aggregator(Interval.S1, lateness=S)
    agg.add_trades([trade(T0 + 20 * S, "100")])
    assert agg.add_trades([trade(T0 + 19 * S - 1, "1")]) == []
    assert agg.dropped_late == 1
    [candle] = agg.add_trades([trade(T0 + 19 * S, "2")])  # exactly now - lateness: accepted
    assert candle.open_time == T0 + 19 * S
    assert candle.closed
    assert agg.now == T0 + 20 * S


def test_candle_is_kept_while_a_trade_can_still_reach_it() -> None:
    agg = aggregator(Interval.S1, lateness=S)
    agg.add_trades([trade(T0, "1")])
    agg.add_trades([trade(T0 + 2 * S - 1, "2")])  # now - lateness = T0 + S - 1
    [candle] = agg.add_trades([trade(T0 + S - 1, "3")])  # oldest acceptable time
    assert (candle.open_time, candle.trade_count, candle.revision) == (T0, 2, 2)
    agg.add_trades([trade(T0 + 2 * S, "4")])  # T0's candle can no longer change
    assert agg.add_trades([trade(T0 + S - 1, "5")]) == []
    assert agg.dropped_late == 1


def test_lateness_uses_now_as_of_each_trade() -> None:
    agg = aggregator(Interval.S1, lateness=S)
    agg.add_trades([trade(T0 + 10 * S, "1"), trade(T0 + 8 * S, "2"), trade(T0 + 9 * S, "3")])
    assert agg.dropped_late == 1
    agg.advance(T0 + 30 * S)
    assert agg.add_trades([trade(T0 + 28 * S, "4")]) == []
    assert agg.dropped_late == 2


def test_no_candles_before_the_first_trade() -> None:
    agg = aggregator(Interval.S1, Interval.M1, lateness=2 * S)
    before = agg.now
    assert before is None
    assert agg.advance(T0 + 10 * S) == []
    assert agg.now == T0 + 10 * S
    assert agg.add_trades([trade(T0 + 7 * S, "1")]) == []  # late against the watermark
    assert agg.dropped_late == 1
    out = agg.add_trades([trade(T0 + 8 * S, "2")])
    assert [(c.interval, c.open_time, c.closed) for c in out] == [
        (Interval.S1, T0 + 8 * S, True),
        (Interval.S1, T0 + 9 * S, True),
        (Interval.S1, T0 + 10 * S, False),
        (Interval.M1, T0, False),
    ]


def test_late_trade_before_the_first_candle_extends_the_series_back() -> None:
    agg = aggregator(Interval.S1, lateness=10 * S)
    agg.add_trades([trade(T0 + 5 * S, "100")])
    out = agg.add_trades([trade(T0 + 2 * S, "50")])
    assert [(c.open_time, c.close, c.trade_count, c.revision) for c in out] == [
        (T0 + 2 * S, Decimal(50), 1, 0),
        (T0 + 3 * S, Decimal(50), 0, 0),
        (T0 + 4 * S, Decimal(50), 0, 0),
    ]


def test_month_boundary() -> None:
    agg = aggregator(Interval.MO1, Interval.D1)
    agg.add_trades([trade(ns("2024-02-29T23:59:59.999Z"), "1")])
    out = agg.add_trades([trade(ns("2024-03-01T00:00:00Z"), "2")])
    months = [c for c in out if c.interval is Interval.MO1]
    assert [(c.open_time, c.close_time, c.close, c.closed) for c in months] == [
        (ns("2024-02-01T00:00:00Z"), ns("2024-03-01T00:00:00Z"), Decimal(1), True),
        (ns("2024-03-01T00:00:00Z"), ns("2024-04-01T00:00:00Z"), Decimal(2), False),
    ]
    days = [c for c in out if c.interval is Interval.D1]
    assert [c.open_time for c in days] == [ns("2024-02-29T00:00:00Z"), ns("2024-03-01T00:00:00Z")]


def test_year_end_month_boundary() -> None:
    agg = aggregator(Interval.MO1)
    agg.add_trades([trade(ns("2024-12-31T23:59:59Z"), "1")])
    out = agg.advance(ns("2025-01-01T00:00:00Z"))
    assert [(c.open_time, c.close_time, c.closed) for c in out] == [
        (ns("2024-12-01T00:00:00Z"), ns("2025-01-01T00:00:00Z"), True),
        (ns("2025-01-01T00:00:00Z"), ns("2025-02-01T00:00:00Z"), False),
    ]


def test_week_starts_on_monday() -> None:
    agg = aggregator(Interval.W1)
    [sunday] = agg.add_trades([trade(ns("2024-03-03T23:59:00Z"), "1")])
    assert sunday.open_time == ns("2024-02-26T00:00:00Z")  # a Monday
    closed, monday = agg.add_trades([trade(ns("2024-03-04T00:00:00Z"), "2")])
    assert closed.open_time == sunday.open_time
    assert closed.closed
    assert monday.open_time == ns("2024-03-04T00:00:00Z")
    assert monday.close_time == ns("2024-03-11T00:00:00Z")


def test_week_boundary_inside_one_batch() -> None:
    for intervals in [(Interval.W1,), (Interval.W1, Interval.D3), (Interval.MO1, Interval.W1)]:
        agg = aggregator(*intervals)
        out = agg.add_trades(
            [trade(ns("2024-03-03T23:59:59Z"), "1"), trade(ns("2024-03-04T00:00:00Z"), "2")]
        )
        weeks = [(c.open_time, c.open, c.trade_count) for c in out if c.interval is Interval.W1]
        assert weeks == [
            (ns("2024-02-26T00:00:00Z"), Decimal(1), 1),
            (ns("2024-03-04T00:00:00Z"), Decimal(2), 1),
        ]


def test_max_gap_fill_keeps_the_most_recent_empty_candles() -> None:
    agg = aggregator(Interval.M1, Interval.H1, max_gap_fill=3)
    agg.add_trades([trade(T0, "100")])
    out = agg.advance(T0 + 10 * MIN)
    minutes = [c.open_time for c in out if c.interval is Interval.M1]
    assert minutes == [T0, T0 + 7 * MIN, T0 + 8 * MIN, T0 + 9 * MIN, T0 + 10 * MIN]
    assert [c.open_time for c in out if c.interval is Interval.H1] == []  # nothing changed
    out = agg.add_trades([trade(T0 + 20 * MIN, "101")])
    minutes = [c.open_time for c in out if c.interval is Interval.M1]
    assert minutes == [T0 + 10 * MIN, T0 + 17 * MIN, T0 + 18 * MIN, T0 + 19 * MIN, T0 + 20 * MIN]


def test_max_gap_fill_zero_emits_no_empty_candles_but_the_forming_one() -> None:
    agg = aggregator(Interval.M1, max_gap_fill=0)
    agg.add_trades([trade(T0, "100")])
    out = agg.advance(T0 + 10 * MIN)
    assert [(c.open_time, c.closed) for c in out] == [(T0, True), (T0 + 10 * MIN, False)]


def test_other_symbol_is_rejected_and_nothing_applied() -> None:
    agg = aggregator(Interval.M1)
    agg.add_trades([trade(T0, "100")])
    other = Trade("ETHUSDT", T0 + 5 * MIN, Decimal(1), Decimal(1), Source.LIVE)
    with pytest.raises(ValueError, match="ETHUSDT"):
        agg.add_trades([trade(T0 + 1, "200"), other])
    assert agg.now == T0
    [candle] = agg.add_trades([trade(T0 + 2, "300")])
    assert (candle.trade_count, candle.high, candle.revision) == (2, Decimal(300), 1)


def test_memory_is_bounded_by_lateness() -> None:
    agg = aggregator(Interval.S1, lateness=3 * S)
    for i in range(100):
        agg.add_trades([trade(T0 + i * S, "1")])
    series = agg._series[0]
    assert len(series.keys) == len(series.candles) <= 4


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        AggregatorConfig((Interval.M1, Interval.M1))
    with pytest.raises(ValueError, match="lateness"):
        AggregatorConfig((Interval.M1,), lateness=-1)
    with pytest.raises(ValueError, match="max_gap_fill"):
        AggregatorConfig((Interval.M1,), max_gap_fill=-1)


def test_output_order_follows_config() -> None:
    agg = aggregator(Interval.H1, Interval.S1, Interval.M5)
    agg.add_trades([trade(T0, "1")])
    out = agg.advance(T0 + 2 * S)
    assert [(c.interval, c.open_time) for c in out] == [
        (Interval.S1, T0),
        (Interval.S1, T0 + S),
        (Interval.S1, T0 + 2 * S),
    ]
    out = agg.add_trades([trade(T0 + H, "2")])
    assert [c.interval for c in out][:1] == [Interval.H1]
    assert [c.interval for c in out][-2:] == [Interval.M5, Interval.M5]


def test_reference_bucketing_agrees_on_calendar_edges() -> None:
    """Sanity check of the test's own reference against known calendar facts."""
    assert ref_bucket(Interval.MO1, ns("2024-02-29T23:59:59.999Z")) == (
        ns("2024-02-01T00:00:00Z"),
        ns("2024-03-01T00:00:00Z"),
    )
    assert ref_bucket(Interval.W1, ns("2024-03-03T23:59:59Z"))[0] == ns("2024-02-26T00:00:00Z")
    assert ref_bucket(Interval.D3, 0) == (0, 3 * D)


# --------------------------------------------------------------------------
# emit_limit: leaving out what a store of that retention would evict at once
# --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 40 * S),  # time since the previous trade (or watermark)
            st.integers(-3 * S, 0),  # how late the trade is (dropped beyond lateness)
            st.booleans(),  # a watermark instead of a trade
            st.booleans(),  # end the batch here
        ),
        min_size=1,
        max_size=120,
    ),
    limit=st.integers(1, 12),
    lateness=st.sampled_from([0, S, 5 * S]),
)
def test_emit_limit_leaves_a_store_of_that_retention_unchanged(
    steps: list[tuple[int, int, bool, bool]], limit: int, lateness: int
) -> None:
    intervals = (Interval.S1, Interval.M1, Interval.M3)
    full = aggregator(*intervals, lateness=lateness)
    limited = SymbolAggregator(
        SYMBOL, AggregatorConfig(intervals, lateness=lateness, emit_limit=limit), Source.SIMULATED
    )
    stores = MemoryStore(retention=limit), MemoryStore(retention=limit)

    async def check() -> None:
        now = 1_700_000_000 * S
        batch: list[Trade] = []
        for i, (gap, late, is_watermark, flush) in enumerate(steps):
            now += gap
            if is_watermark:
                calls = [(a.add_trades(batch), a.advance(now)) for a in (full, limited)]
                outs = [x + y for x, y in calls]
                batch = []
            else:
                batch.append(trade(now + late, str(100 + i % 7), "1"))
                if not flush and i < len(steps) - 1:
                    continue
                outs = [full.add_trades(batch), limited.add_trades(batch)]
                batch = []
            assert all(c in outs[0] for c in outs[1]), "only leaves candles out"
            for store, out in zip(stores, outs, strict=True):
                await store.write_candles(out)
            for interval in intervals:
                series = SeriesKey(SYMBOL, interval)
                pages = [
                    await s.get_candles(series, start=None, end=None, limit=limit) for s in stores
                ]
                assert list(pages[0].open_times) == list(pages[1].open_times), interval.label
                assert list(pages[0].frames) == list(pages[1].frames), interval.label

    asyncio.run(check())


def test_emit_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="emit_limit"):
        AggregatorConfig((Interval.S1,), emit_limit=0)
