"""SubscribeCandles: history, snapshot_end, live, closed_only, heartbeats, resume."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Mapping

import grpc
import pytest

from candlewire.app import App
from candlewire.domain import Interval, SeriesKey
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1.marketdata_pb2_grpc import MarketDataServiceStub
from tests.scripted import ScriptedFeed, running, sec, stub_for
from tests.streams import WAIT, key, read, series

BTC_1S = series("BTCUSDT", pb.INTERVAL_1S)
BTC_1M = series("BTCUSDT", pb.INTERVAL_1M)
ETH_1M = series("ETHUSDT", pb.INTERVAL_1M)


async def history_tape(feed: ScriptedFeed) -> None:
    """Trades over five minutes for BTC and ETH, one every 30 s."""
    for i in range(10):
        await feed.trade("BTCUSDT", sec(30 * i + 1), f"{100 + i}.5", "0.25")
        await feed.trade("ETHUSDT", sec(30 * i + 2), f"{50 + i}.25", "1")


async def test_history_then_snapshot_end_then_live(
    feed: ScriptedFeed, stub: MarketDataServiceStub
) -> None:
    await history_tape(feed)
    call = stub.SubscribeCandles(pb.SubscribeCandlesRequest(series=[BTC_1M, ETH_1M], history=3))
    history = await read(call, 7)
    kinds = [r.WhichOneof("event") for r in history]
    assert kinds == ["candle"] * 6 + ["snapshot_end"]
    btc, eth = history[:3], history[3:6]
    assert {r.candle.symbol for r in btc} == {"BTCUSDT"}
    assert {r.candle.symbol for r in eth} == {"ETHUSDT"}
    for part in (btc, eth):
        times = [r.candle.open_time.ToNanoseconds() for r in part]
        assert times == sorted(times) and len(set(times)) == 3
        assert [r.candle.closed for r in part] == [True, True, False]
    # The forming BTC candle of minute 4 had trades at 4:01 and 4:31.
    assert btc[-1].candle.open_time.ToNanoseconds() == sec(240)
    assert (btc[-1].candle.open, btc[-1].candle.close) == (108.5, 109.5)
    assert all(r.resume_token for r in history)

    await feed.trade("BTCUSDT", sec(295), "99.75", "2")
    (live,) = await read(call, 1)
    assert live.candle.symbol == "BTCUSDT" and live.candle.open_time.ToNanoseconds() == sec(240)
    assert (live.candle.low, live.candle.close, live.candle.volume) == (99.75, 99.75, 2.5)
    assert live.candle.revision > btc[-1].candle.revision
    call.cancel()


async def test_start_time_history(feed: ScriptedFeed, stub: MarketDataServiceStub) -> None:
    await history_tape(feed)
    request = pb.SubscribeCandlesRequest(series=[BTC_1M])
    request.start_time.FromNanoseconds(sec(120))
    call = stub.SubscribeCandles(request)
    responses = await read(call, 4)
    assert [r.candle.open_time.ToNanoseconds() for r in responses[:3]] == [
        sec(120),
        sec(180),
        sec(240),
    ]
    assert responses[3].WhichOneof("event") == "snapshot_end"
    call.cancel()


async def test_live_updates_are_ordered_per_series(
    feed: ScriptedFeed, stub: MarketDataServiceStub, app: App
) -> None:
    call = stub.SubscribeCandles(pb.SubscribeCandlesRequest(series=[BTC_1S, BTC_1M]))
    (end,) = await read(call)
    assert end.WhichOneof("event") == "snapshot_end"
    rng = random.Random(7)
    t = 0.0
    wanted = [BTC_1S, BTC_1M]
    responses = []
    for _ in range(40):
        head = await app.store.head(("BTCUSDT", "ETHUSDT"))
        t += rng.choice([0.1, 0.4, 1.3])
        await feed.trade("BTCUSDT", sec(t), str(rng.randint(90, 110)), "1")
        responses += await read(call, await count_updates(app, wanted, after=head))
    head = await app.store.head(("BTCUSDT", "ETHUSDT"))
    await feed.watermark("BTCUSDT", sec(t + 61))
    responses += await read(call, await count_updates(app, wanted, after=head))
    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for r in responses:
        c = r.candle
        position = (c.open_time.ToNanoseconds(), c.revision)
        previous = seen.get((c.symbol, c.interval))
        assert previous is None or position > previous, "out of order"
        seen[(c.symbol, c.interval)] = position
    # The watermark closed the last traded minute and opened an empty forming one.
    last_minute = sec(t) - (sec(t) - sec(0)) % (60 * 10**9)
    closing = [r.candle for r in responses if r.candle.open_time.ToNanoseconds() == last_minute]
    assert closing[-1].closed and closing[-1].interval == pb.INTERVAL_1M
    forming = responses[-1].candle
    assert not forming.closed and forming.volume == 0 and forming.close == closing[-1].close
    call.cancel()


async def count_updates(
    app: App, wanted: list[pb.Series], *, after: Mapping[str, int], closed_only: bool = False
) -> int:
    """How many updates of ``wanted`` the store logged after ``after``."""
    keys = [SeriesKey(s.symbol, Interval(s.interval)) for s in wanted]
    updates = await app.store.read_updates(keys, after=after)
    return sum(1 for u in updates if u.closed or not closed_only)


async def test_closed_only(feed: ScriptedFeed, stub: MarketDataServiceStub) -> None:
    await history_tape(feed)
    call = stub.SubscribeCandles(
        pb.SubscribeCandlesRequest(series=[BTC_1M], history=10, closed_only=True)
    )
    history = []
    while True:
        (r,) = await read(call)
        if r.WhichOneof("event") == "snapshot_end":
            break
        history.append(r.candle)
    assert len(history) == 4 and all(c.closed for c in history)
    await feed.trade("BTCUSDT", sec(299), "1", "1")  # forming only: not sent
    await feed.trade("BTCUSDT", sec(301), "2", "1")  # closes minute 4, opens minute 5
    (r,) = await read(call)
    assert r.candle.closed and r.candle.open_time.ToNanoseconds() == sec(240)
    assert r.candle.close == 1.0
    call.cancel()


async def test_heartbeat_when_idle_carries_watermarks_and_a_usable_token(
    feed: ScriptedFeed, stub: MarketDataServiceStub
) -> None:
    await feed.trade("BTCUSDT", sec(1), "100", "1")
    await feed.watermark("ETHUSDT", sec(5))
    request = pb.SubscribeCandlesRequest(series=[BTC_1M, ETH_1M], history=1)
    call = stub.SubscribeCandles(request)
    await read(call, 2)  # BTC forming candle (ETH has none), snapshot_end
    (beat,) = await read(call, heartbeats=True)
    assert beat.WhichOneof("event") == "heartbeat"
    marks = {
        (m.series.symbol, m.series.interval): m.last_event_time.ToNanoseconds()
        for m in beat.heartbeat.watermarks
    }
    assert marks == {("BTCUSDT", pb.INTERVAL_1M): sec(1), ("ETHUSDT", pb.INTERVAL_1M): sec(5)}
    assert abs(beat.heartbeat.server_time.ToNanoseconds() - sec(0)) > 0
    call.cancel()

    await feed.trade("BTCUSDT", sec(2), "101", "1")
    request.resume_token = beat.resume_token
    resumed = stub.SubscribeCandles(request)
    (r,) = await read(resumed)
    assert r.candle.close == 101.0 and r.candle.trade_count == 2
    resumed.cancel()


async def test_resume_at_random_points_equals_uninterrupted_stream(
    feed: ScriptedFeed, stub: MarketDataServiceStub, app: App
) -> None:
    """A subscriber cancelled at random points and resumed with its last token
    sees exactly what a never-interrupted subscriber sees."""
    await history_tape(feed)
    wanted = [BTC_1S, BTC_1M, ETH_1M]
    request = pb.SubscribeCandlesRequest(series=wanted, history=4)
    reference = stub.SubscribeCandles(request)
    first = await read(reference, 3 * 4 + 1)
    assert first[-1].WhichOneof("event") == "snapshot_end"
    expected = [key(r) for r in first]

    rng = random.Random(2024)
    got: list[tuple[object, ...]] = []
    token = ""
    resumes = 0

    async def read_interrupted(n: int) -> None:
        """Read n responses, cancelling and resuming at random points."""
        nonlocal token, resumes, call
        while n:
            if rng.random() < 0.3:
                call.cancel()
                request.resume_token = token
                call = stub.SubscribeCandles(request)
                resumes += 1
            (r,) = await read(call)
            got.append(key(r))
            token = r.resume_token
            n -= 1

    call = stub.SubscribeCandles(request)
    await read_interrupted(len(first))

    async def step(event: Awaitable[None]) -> None:
        """Feed one event, then let both subscribers read all it produced
        (so neither queue ever holds two versions of one candle)."""
        nonlocal expected
        head = await app.store.head(("BTCUSDT", "ETHUSDT"))
        await event
        n = await count_updates(app, wanted, after=head)
        expected += [key(r) for r in await read(reference, n)]
        await read_interrupted(n)

    t = 300.0
    for _ in range(60):
        t += rng.choice([0.2, 0.7, 1.5, 20.0])
        symbol = rng.choice(["BTCUSDT", "ETHUSDT"])
        await step(feed.trade(symbol, sec(t), f"{rng.randint(900, 1100) / 10}", "0.5"))
        if rng.random() < 0.2:
            await step(feed.watermark(symbol, sec(t + 1)))
    call.cancel()
    reference.cancel()
    assert resumes > 20
    assert got == expected


async def test_expired_token_is_out_of_range() -> None:
    feed = ScriptedFeed()
    async with (
        running(feed, update_log_size=16, heartbeat_interval=0.2) as app,
        stub_for(app) as stub,
    ):
        await feed.trade("BTCUSDT", sec(0), "1", "1")
        request = pb.SubscribeCandlesRequest(series=[BTC_1S], history=1)
        call = stub.SubscribeCandles(request)
        responses = await read(call, 2)
        call.cancel()
        for i in range(1, 100):
            await feed.trade("BTCUSDT", sec(i), "1", "1")
        request.resume_token = responses[-1].resume_token
        call = stub.SubscribeCandles(request)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await read(call)
        assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE

        # A token from an earlier process (another store) is expired too.
        other = ScriptedFeed()
        async with running(other) as second, stub_for(second) as stub2:
            call = stub2.SubscribeCandles(request)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await read(call)
            assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SubscribeCandlesRequest(), "series"),
        (pb.SubscribeCandlesRequest(series=[series("", pb.INTERVAL_1M)]), "series[0].symbol"),
        (pb.SubscribeCandlesRequest(series=[BTC_1M, series("BTCUSDT", 0)]), "series[1].interval"),
        (pb.SubscribeCandlesRequest(series=[BTC_1M, series("BTCUSDT", 99)]), "series[1].interval"),
        (pb.SubscribeCandlesRequest(series=[BTC_1M, BTC_1M]), "series[1]"),
        (pb.SubscribeCandlesRequest(series=[BTC_1M] * 101), "series"),
        (pb.SubscribeCandlesRequest(series=[BTC_1M], history=1001), "history"),
        (pb.SubscribeCandlesRequest(series=[BTC_1M], resume_token="garbage"), "resume_token"),
    ],
)
async def test_invalid_requests_name_the_field(
    stub: MarketDataServiceStub, request_: pb.SubscribeCandlesRequest, field: str
) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    call = stub.SubscribeCandles(request_)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await read(call)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [field]


async def test_unknown_symbol_is_not_found(stub: MarketDataServiceStub) -> None:
    call = stub.SubscribeCandles(
        pb.SubscribeCandlesRequest(series=[series("NOPE", pb.INTERVAL_1M)])
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await read(call)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_token_of_another_request_is_refused(
    feed: ScriptedFeed, stub: MarketDataServiceStub
) -> None:
    call = stub.SubscribeCandles(pb.SubscribeCandlesRequest(series=[BTC_1M]))
    (end,) = await read(call)
    call.cancel()
    other = stub.SubscribeCandles(
        pb.SubscribeCandlesRequest(series=[ETH_1M], resume_token=end.resume_token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await read(other)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_slow_subscriber_is_bounded_and_does_not_delay_others() -> None:
    """A subscriber that stops reading never holds more than the queue bound,
    never delays a fast one, ends with RESOURCE_EXHAUSTED, and loses nothing:
    resuming with its last token yields what the fast one saw."""
    feed = ScriptedFeed()
    queue_size = 8
    # The slow client gets its own connection with a fixed 64 KiB window (no
    # BDP probing), so its transport buffers fill after a few hundred messages.
    async with (
        running(feed, subscriber_queue_size=queue_size, heartbeat_interval=30) as app,
        stub_for(app) as stub,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{app.port}", options=[("grpc.http2.bdp_probe", 0)]
        ) as slow_channel,
    ):
        request = pb.SubscribeCandlesRequest(series=[BTC_1S], closed_only=True)
        fast = stub.SubscribeCandles(request)
        slow = MarketDataServiceStub(slow_channel).SubscribeCandles(request)
        await read(fast)
        await read(slow)  # snapshot_end; then the slow one stops reading
        fast_seen = []
        pushes = 0
        while app.hub.overflowed == 0:
            pushes += 1
            assert pushes < 50_000, "the slow subscriber was never ended"
            await feed.trade("BTCUSDT", sec(pushes), "100", "1")
            if pushes > 1:  # each trade closes the previous second
                fast_seen += [key(r) for r in await read(fast)]
            assert app.hub.max_queued <= queue_size
        assert len(app.hub) == 1  # the slow subscription was dropped; the fast one remains
        for i in range(pushes + 1, pushes + 5):
            await feed.trade("BTCUSDT", sec(i), "100", "1")
            fast_seen += [key(r) for r in await read(fast)]

        slow_seen = []
        token = ""
        with pytest.raises(grpc.aio.AioRpcError) as error:
            while True:
                (r,) = await read(slow)
                slow_seen.append(key(r))
                token = r.resume_token
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < len(slow_seen) < len(fast_seen)
        request.resume_token = token
        resumed = stub.SubscribeCandles(request)
        slow_seen += [key(r) for r in await read(resumed, len(fast_seen) - len(slow_seen))]
        assert slow_seen == fast_seen
        fast.cancel()
        resumed.cancel()


async def test_shutdown_ends_streams_with_unavailable() -> None:
    feed = ScriptedFeed()
    async with running(feed) as app, stub_for(app) as stub:
        call = stub.SubscribeCandles(pb.SubscribeCandlesRequest(series=[BTC_1M]))
        await read(call)
        app.stop()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await asyncio.wait_for(call.read(), WAIT)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
