"""The validation policy: each rule on crafted input (refused, counted, never
in a candle), and a valid tape passes untouched."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

from candlewire.aggregate import AggregatorConfig, SymbolAggregator
from candlewire.domain import Candle, Interval, Quote, Side, Source, Trade
from candlewire.validate import Reason, Rejected, ValidationConfig, Validator
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec, stub_for
from tests.trading import push, tape

S = 1_000_000_000
NOW = sec(3600)  # the service clock of the pure tests


def trade(t: float, price: str, qty: str = "1", symbol: str = "BTCUSDT") -> Trade:
    return Trade(symbol, sec(t), Decimal(price), Decimal(qty), Source.LIVE, Side.BUY)


def quote(bid: str, ask: str, *, t: float = 0, size: str = "1") -> Quote:
    return Quote(
        "BTCUSDT", sec(t), Decimal(bid), Decimal(ask), Decimal(size), Decimal(size), Source.LIVE, 0
    )


def validator(**config: object) -> tuple[Validator, list[Rejected]]:
    seen: list[Rejected] = []
    return Validator(ValidationConfig(**config), on_reject=seen.append), seen  # type: ignore[arg-type]


def test_non_positive_and_non_finite_prices_and_sizes_are_refused() -> None:
    v, seen = validator()
    bad = [
        trade(1, "0"), trade(1, "-5"), trade(1, "NaN"), trade(1, "Infinity"),
        trade(1, "100", "0"), trade(1, "100", "-1"), trade(1, "100", "sNaN"),
    ]  # fmt: skip
    assert v.trades(bad, NOW) == []
    assert [r.reason for r in seen] == [Reason.NON_POSITIVE_PRICE] * 4 + [
        Reason.NON_POSITIVE_SIZE
    ] * 3
    assert v.rejections.of("BTCUSDT") == [
        (Reason.NON_POSITIVE_PRICE, 4, sec(1)),
        (Reason.NON_POSITIVE_SIZE, 3, sec(1)),
    ]


def test_crossed_and_broken_quotes_are_refused_a_locked_one_passes() -> None:
    v, seen = validator()
    locked = quote("100", "100")
    assert v.quotes(
        [quote("101", "100"), quote("0", "1"), quote("1", "2", size="-1"), locked], NOW
    ) == [locked]
    assert [r.reason for r in seen] == [
        Reason.CROSSED_QUOTE,
        Reason.NON_POSITIVE_PRICE,
        Reason.NON_POSITIVE_SIZE,
    ]


def test_times_too_far_ahead_are_refused() -> None:
    v, seen = validator(max_future=5 * S)
    ahead = NOW + 5 * S + 1
    ok = Trade("BTCUSDT", NOW + 5 * S, Decimal(1), Decimal(1), Source.LIVE)
    late = Trade("BTCUSDT", ahead, Decimal(1), Decimal(1), Source.LIVE)
    assert v.trades([late, ok], NOW) == [ok]
    assert not v.watermark("BTCUSDT", ahead, NOW)
    assert v.quotes([quote("1", "2", t=(ahead - sec(0)) / S)], NOW) == []
    assert [r.reason for r in seen] == [Reason.FUTURE_TIME] * 3


def test_trades_behind_the_watermark_beyond_the_lateness_are_refused() -> None:
    v, seen = validator(lateness=2 * S)
    accepted = v.trades([trade(10, "100"), trade(8, "100"), trade(7.999, "100")], NOW)
    assert [t.time for t in accepted] == [sec(10), sec(8)]
    assert v.watermark("BTCUSDT", sec(20), NOW)
    assert v.trades([trade(17.5, "100")], NOW) == []
    assert [r.reason for r in seen] == [Reason.LATE, Reason.LATE]


def test_outliers_are_refused_relative_to_the_median_of_recent_prices() -> None:
    v, seen = validator(max_jump=Decimal("0.1"), outlier_window=8, outlier_min=4)
    steady = [trade(i, str(100 + i % 3)) for i in range(6)]
    assert v.trades(steady, NOW) == steady
    spike = trade(7, "150")
    dip = trade(8, "89")
    near = trade(9, "109")
    assert v.trades([spike, dip, near], NOW) == [near]
    assert [r.reason for r in seen] == [Reason.OUTLIER, Reason.OUTLIER]
    # A lasting move becomes the reference once it fills half the window.
    moved = [trade(10 + i, "200") for i in range(8)]
    accepted = v.trades(moved, NOW)
    assert accepted and accepted == moved[-len(accepted) :] and len(accepted) < len(moved)


def test_a_valid_tape_passes_untouched_and_gives_the_same_candles() -> None:
    trades = tape(random.Random(3), ["BTCUSDT", "ETHUSDT"], 500)
    v, seen = validator(lateness=2 * S)
    accepted = v.trades(trades, NOW)
    assert accepted == trades and seen == []
    config = AggregatorConfig((Interval.M1, Interval.H1), lateness=2 * S)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = [t for t in trades if t.symbol == symbol]
        one = SymbolAggregator(symbol, config, Source.LIVE).add_trades(mine)
        two = SymbolAggregator(symbol, config, Source.LIVE).add_trades(
            [t for t in accepted if t.symbol == symbol]
        )
        assert one == two


def test_venue_candles_with_broken_values_are_refused() -> None:
    v, seen = validator()
    good = Candle(
        "BTCUSDT", Interval.M1, sec(0), sec(60), *(Decimal(1),) * 4, Decimal(2), Decimal(2), 3,
        True, 0, Source.LIVE, Decimal(1), Decimal(1),
    )  # fmt: skip
    bad = [replace(good, low=Decimal(0)), replace(good, volume=Decimal(-1))]
    assert v.candles([*bad, good], NOW) == [good]
    assert [r.reason for r in seen] == [Reason.NON_POSITIVE_PRICE, Reason.NON_POSITIVE_SIZE]


async def test_refused_input_never_reaches_a_candle_and_is_listed() -> None:
    feed = ScriptedFeed()
    async with (
        running(feed, heartbeat_interval=30, max_jump=0.1, lateness=2.0) as app,
        stub_for(app) as stub,
    ):
        await push(feed, [trade(i, "100", "1") for i in range(10)])
        await feed.quote("BTCUSDT", sec(10), "99", "100")
        crafted = [
            trade(10, "0"),  # non-positive price
            trade(10, "100", "-2"),  # non-positive size
            trade(5, "100"),  # behind the watermark beyond the lateness
            trade(11, "500"),  # outlier
            Trade("BTCUSDT", 2**62, Decimal(100), Decimal(1), Source.LIVE),  # far ahead
        ]
        await push(feed, crafted)
        await feed.quote("BTCUSDT", sec(11), "101", "100")  # crossed
        candles = (
            await stub.GetCandles(pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M))
        ).candles
        assert [(c.volume, c.high, c.low, c.trade_count) for c in candles] == [
            (10.0, 100.0, 100.0, 10)
        ]
        trades = (await stub.GetTrades(pb.GetTradesRequest(symbol="BTCUSDT"))).trades
        assert [t.event_time.ToNanoseconds() for t in trades] == [sec(i) for i in range(10)]
        price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"))).price
        assert (price.bid, price.ask) == (99.0, 100.0)
        listed = (await stub.ListSymbols(pb.ListSymbolsRequest())).symbols
        counts = {s.symbol: {r.reason: r.count for r in s.rejections} for s in listed}
        assert counts["BTCUSDT"] == {
            pb.REJECT_REASON_NON_POSITIVE_PRICE: 1,
            pb.REJECT_REASON_NON_POSITIVE_SIZE: 1,
            pb.REJECT_REASON_LATE: 1,
            pb.REJECT_REASON_OUTLIER: 1,
            pb.REJECT_REASON_FUTURE_TIME: 1,
            pb.REJECT_REASON_CROSSED_QUOTE: 1,
        }
        assert counts["ETHUSDT"] == {}
        assert app.rejections.total() == 6


def test_quote_ticks_of_a_market_without_trades_carry_no_size() -> None:
    v, seen = validator()
    ticks = [trade(1, "1.0842", "0"), trade(2, "1.0843", "0")]
    assert v.trades(ticks, NOW, ticks=True) == ticks
    assert v.trades([trade(3, "1.0843", "-1"), trade(3, "0", "0")], NOW, ticks=True) == []
    assert [r.reason for r in seen] == [Reason.NON_POSITIVE_SIZE, Reason.NON_POSITIVE_PRICE]
    assert v.trades([trade(4, "1.0843", "0")], NOW) == []  # as a trade, a size is required
