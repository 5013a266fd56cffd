"""A stream whose resume token is refused starts again, says so, and repeats nothing.

The first test restarts a real in-memory service on the same port under a
subscribed client: the new process has a new store, so it refuses the token
(OUT_OF_RANGE). The others script the service to pin the rule exactly
(renumbered revisions, replayed history, the request sent again), for the
async and blocking clients and for ``watch``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest

from candlewire_client import (
    Candle,
    CandleEvent,
    CandlewireClient,
    CandlewireError,
    Client,
    ContinuityLost,
    Heartbeat,
    OutOfRangeError,
    Series,
    SnapshotEnd,
)
from candlewire_client import cli as client_cli
from candlewire_client._convert import to_timestamp
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.client.conftest import FAST, Collector, FakeService, has_candle, logged_candles
from tests.scripted import T0, ScriptedFeed, running, sec

SERIES = [Series.of("BTCUSDT@1s"), Series.of("BTCUSDT@1m"), Series.of("ETHUSDT@1m")]
T0_UTC = datetime.fromtimestamp(T0 // 10**9, UTC)
BTC_TAPE = [("BTCUSDT", sec(i), f"{64000 + i}.25", "0.5") for i in range(6)]
BTC_LATER = ("BTCUSDT", sec(10.5), "64010.5", "0.1")


def _market(candle: Candle[Any]) -> tuple[object, ...]:
    """Everything but revision and source."""
    c = candle
    return (
        c.series,
        c.open_time,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.trade_count,
        c.closed,
    )


def _shown(events: Sequence[object]) -> list[object]:
    """Candles, snapshot ends and continuity losses, in order, without heartbeats."""
    out: list[object] = []
    for event in events:
        if isinstance(event, CandleEvent):
            out.append(event.candle)
        elif isinstance(event, SnapshotEnd):
            out.append("snapshot_end")
        elif isinstance(event, ContinuityLost):
            out.append(event)
        else:
            assert isinstance(event, Heartbeat), event
    return out


async def _latest(client: CandlewireClient[Decimal], limit: int) -> list[Candle[Decimal]]:
    """What a ``history=limit`` snapshot holds, series by series."""
    out: list[Candle[Decimal]] = []
    for s in SERIES:
        out.extend(await client.fetch_candles(s.symbol, s.interval, limit=limit))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_restarted_memory_server_continues_the_stream_without_duplicates() -> None:
    target = f"127.0.0.1:{_free_port()}"
    go = asyncio.Event()
    reconnects: list[CandlewireError] = []

    async def on_reconnect(attempt: int, delay: float, error: CandlewireError) -> None:
        reconnects.append(error)
        await go.wait()  # reconnect once the new process holds its data

    first, second = ScriptedFeed(), ScriptedFeed()
    async with CandlewireClient(target, decimals=True, retry=FAST) as client:
        async with running(first, heartbeat_interval=0.2, grpc_listen=target) as app:
            await first.trades(BTC_TAPE)
            snapshot = await _latest(client, 3)
            stream = client.subscribe_candles(SERIES, history=3, on_reconnect=on_reconnect)
            events = Collector(stream)
            await events.wait_until(lambda items: "snapshot_end" in _shown(items))
            head = await app.store.head(("BTCUSDT", "ETHUSDT"))
            await first.trade(*BTC_LATER)
            live = await logged_candles(app, SERIES, head)
            await events.wait_until(lambda items: has_candle(items, live[-1]))
        held_1m = next(c for c in reversed(live) if c.series == SERIES[1])

        # The process ended; a new one, with a new in-memory store, takes the same port.
        async with running(second, heartbeat_interval=0.2, grpc_listen=target) as restarted:
            # The same trades in one batch: the same candles, with fewer revisions.
            await second.trades([*BTC_TAPE, BTC_LATER])
            await second.trade("ETHUSDT", sec(11), "3478.29", "2")
            replay = [
                c
                for s in SERIES
                for c in await client.fetch_candles(s.symbol, s.interval, start=T0_UTC)
            ]
            renumbered = next(c for c in replay if c.series == SERIES[1])
            assert _market(renumbered) == _market(held_1m)
            assert renumbered.revision < held_1m.revision  # revisions cannot tell them apart

            go.set()
            await events.wait_until(lambda items: _shown(items).count("snapshot_end") == 2)
            head = await restarted.store.head(("BTCUSDT", "ETHUSDT"))
            await second.trade("BTCUSDT", sec(12.5), "64012.25", "0.2")
            after = await logged_candles(restarted, SERIES, head)
            await events.wait_until(lambda items: has_candle(items, after[-1]))
            await events.stop()

            # The token now continues the fresh request: start=since, no history.
            head = await restarted.store.head(("BTCUSDT", "ETHUSDT"))
            await second.trade("ETHUSDT", sec(13), "3479.5", "1")
            later = await logged_candles(restarted, SERIES, head)
            continued = client.subscribe_candles(
                SERIES, start=T0_UTC, resume_token=stream.resume_token
            )
            resumed = Collector(continued)
            await resumed.wait_until(lambda items: has_candle(items, later[-1]))
            await resumed.stop()

    shown = _shown(events.items)
    lost = next(i for i, item in enumerate(shown) if isinstance(item, ContinuityLost))
    assert shown[:lost] == [*snapshot, "snapshot_end", *live]
    assert shown[lost] == ContinuityLost(
        tuple(SERIES),
        T0_UTC,  # the oldest of the newest candles delivered per series (BTCUSDT@1m's)
        "the data this resume_token points to is no longer retained",
    )
    # Of the history sent again, only the ETHUSDT candle is new to the caller:
    # BTCUSDT@1s before 00:00:10, and the unchanged 00:00:10 and 1m candles, are left out.
    eth = [c for c in replay if c.symbol == "ETHUSDT"]
    assert len(eth) == 1
    assert shown[lost + 1 :] == [*eth, "snapshot_end", *after]
    assert {SERIES[0], SERIES[1]} <= {c.series for c in after}
    assert reconnects and all(e.code is grpc.StatusCode.UNAVAILABLE for e in reconnects)
    assert [e.candle for e in resumed.items if isinstance(e, CandleEvent)] == later


# -- the rule, against a scripted service -------------------------------------

BTC, ETH = Series.of("BTCUSDT@1m"), Series.of("ETHUSDT@1m")


def _pb_candle(series: Series, minute: int, close: float, revision: int) -> pb.Candle:
    open_time = T0_UTC + timedelta(minutes=minute)
    return pb.Candle(
        symbol=series.symbol,
        interval=series.interval.number,  # type: ignore[arg-type]
        open_time=to_timestamp(open_time),
        close_time=to_timestamp(open_time + timedelta(minutes=1)),
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        trade_count=1,
        revision=revision,
    )


def _c(series: Series, minute: int, close: float, revision: int) -> pb.SubscribeCandlesResponse:
    return pb.SubscribeCandlesResponse(candle=_pb_candle(series, minute, close, revision))


def _end() -> pb.SubscribeCandlesResponse:
    return pb.SubscribeCandlesResponse(snapshot_end=pb.SnapshotEnd())


def _beat() -> pb.SubscribeCandlesResponse:
    return pb.SubscribeCandlesResponse(heartbeat=pb.Heartbeat())


class Script:
    """SubscribeCandles answering call n with ``calls[n]``: responses, then a status.

    Every response gets a token naming its call and place. A call without a
    status stays open (a live stream with nothing more to say).
    """

    def __init__(
        self, *calls: tuple[list[pb.SubscribeCandlesResponse], grpc.StatusCode | None, str]
    ) -> None:
        self.calls = calls
        self.requests: list[pb.SubscribeCandlesRequest] = []

    async def __call__(
        self, request: pb.SubscribeCandlesRequest, context: Any
    ) -> AsyncIterator[pb.SubscribeCandlesResponse]:
        self.requests.append(request)
        number = len(self.requests)
        responses, code, details = self.calls[min(number, len(self.calls)) - 1]
        for index, response in enumerate(responses):
            response.resume_token = f"call{number}-{index}"
            yield response
        if code is None:
            await asyncio.Event().wait()
        else:
            await context.abort(code, details)


def _restart_script() -> Script:
    return Script(
        # Before: BTC 00:00 and 00:01, ETH 00:00, history done; then the server goes.
        ([_c(BTC, 0, 1.0, 0), _c(BTC, 1, 2.0, 3), _c(ETH, 0, 5.0, 2), _end()],
         grpc.StatusCode.UNAVAILABLE, "going away"),
        ([], grpc.StatusCode.OUT_OF_RANGE, "no longer retained"),
        # After: history from 00:00 as the new server has it, then live updates.
        ([
            _c(BTC, 0, 1.5, 0),  # before BTC's newest delivered candle: left out
            _c(BTC, 1, 2.0, 0),  # the same data, renumbered: left out
            _beat(),
            _c(ETH, 0, 6.0, 0),  # changed (with a lower revision): delivered
            _c(ETH, 1, 7.0, 0),  # new: delivered
            _end(),
            _c(BTC, 1, 2.0, 1),  # live, the same data again: left out
            _c(BTC, 0, 1.5, 1),  # live correction of an older candle: delivered
            _c(BTC, 2, 3.0, 0),  # new: delivered
         ], None, ""),
    )  # fmt: skip


EXPECTED_AFTER = [
    ("ETHUSDT", 0, 6.0, 0),
    ("ETHUSDT", 1, 7.0, 0),
    "snapshot_end",
    ("BTCUSDT", 0, 1.5, 1),
    ("BTCUSDT", 2, 3.0, 0),
]


def _brief(events: Sequence[object]) -> list[object]:
    out: list[object] = []
    for item in _shown(events):
        if isinstance(item, Candle):
            minute = (item.open_time - T0_UTC) // timedelta(minutes=1)
            out.append((item.symbol, minute, item.close, item.revision))
        else:
            out.append(item)
    return out


def _check_requests(script: Script) -> None:
    first, resumed, fresh = script.requests[:3]
    assert (first.history, first.HasField("start_time"), first.resume_token) == (2, False, "")
    assert resumed.resume_token == "call1-3"
    assert [(s.symbol, s.interval) for s in fresh.series] == [
        (s.symbol, s.interval) for s in first.series
    ]
    assert (fresh.history, fresh.resume_token, fresh.closed_only) == (0, "", False)
    assert fresh.start_time == to_timestamp(T0_UTC)


async def test_the_rule_of_what_is_delivered_again(fake: FakeService) -> None:
    script = _restart_script()
    fake.handlers["SubscribeCandles"] = script
    await fake.start()
    async with CandlewireClient(fake.target, retry=FAST) as client:
        stream = client.subscribe_candles([BTC, ETH], history=2)
        events = Collector(stream)
        await events.wait_until(lambda items: len(_brief(items)) == 10)
        assert stream.state == "live"
        await events.stop()
    assert _brief(events.items) == [
        ("BTCUSDT", 0, 1.0, 0),
        ("BTCUSDT", 1, 2.0, 3),
        ("ETHUSDT", 0, 5.0, 2),
        "snapshot_end",
        ContinuityLost((BTC, ETH), T0_UTC, "no longer retained"),
        *EXPECTED_AFTER,
    ]
    _check_requests(script)
    assert (stream.continuity_losses, stream.reconnects) == (1, 1)
    assert stream.resume_token == "call3-8"


async def test_blocking_client_yields_the_event(fake: FakeService) -> None:
    script = _restart_script()
    fake.handlers["SubscribeCandles"] = script
    await fake.start()

    def consume() -> tuple[list[object], int]:
        with (
            Client(fake.target, retry=FAST) as client,
            client.subscribe_candles([BTC, ETH], history=2) as stream,
        ):
            events: list[object] = []
            for event in stream:
                events.append(event)
                if len(_brief(events)) == 10:
                    break
            return events, stream.continuity_losses

    events, losses = await asyncio.to_thread(consume)
    brief = _brief(events)
    assert brief[4] == ContinuityLost((BTC, ETH), T0_UTC, "no longer retained")
    assert brief[5:] == EXPECTED_AFTER
    assert losses == 1


async def test_watch_prints_the_loss(fake: FakeService, capsys: pytest.CaptureFixture[str]) -> None:
    fake.handlers["SubscribeCandles"] = _restart_script()
    await fake.start()
    argv = ["watch", "BTCUSDT,ETHUSDT", "1m", "--history", "2", "--count", "7", "--plain"]
    status = await asyncio.to_thread(client_cli.main, [*argv, "--target", fake.target])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    lost = lines.index(
        "# continuity lost (no longer retained); candles again from 2026-01-01T00:00:00Z"
    )
    assert lines[lost - 1].startswith("# reconnecting: attempt 1 in ")
    assert [line.split()[:4] for line in lines[lost + 1 :]] == [
        ["#", "history"],
        ["ETHUSDT@1m", "2026-01-01T00:00:00Z", "o=6.0", "h=6.0"],
        ["ETHUSDT@1m", "2026-01-01T00:01:00Z", "o=7.0", "h=7.0"],
        ["#", "live"],
        ["BTCUSDT@1m", "2026-01-01T00:00:00Z", "o=1.5", "h=1.5"],
        ["BTCUSDT@1m", "2026-01-01T00:02:00Z", "o=3.0", "h=3.0"],
        ["#", "stopped:", "7", "updates"],
    ]


@pytest.mark.parametrize(
    ("kwargs", "before", "since", "fresh_history"),
    [
        # Nothing delivered yet: the original request is sent again as it was.
        ({"history": 2}, [_beat()], None, 2),
        ({"start": T0_UTC}, [_beat()], T0_UTC, 0),
        # ETH had no candle yet and the request had a start: from that start.
        ({"start": T0_UTC}, [_c(BTC, 5, 1.0, 0)], T0_UTC, 0),
        # ... without one (history), from the newest delivered candle.
        ({"history": 2}, [_c(BTC, 5, 1.0, 0)], T0_UTC + timedelta(minutes=5), 0),
    ],
)
async def test_where_the_fresh_request_starts(
    fake: FakeService,
    kwargs: dict[str, Any],
    before: list[pb.SubscribeCandlesResponse],
    since: datetime | None,
    fresh_history: int,
) -> None:
    script = Script(
        (before, grpc.StatusCode.UNAVAILABLE, "going away"),
        ([], grpc.StatusCode.OUT_OF_RANGE, "no longer retained"),
        ([_end()], None, ""),
    )
    fake.handlers["SubscribeCandles"] = script
    await fake.start()
    async with CandlewireClient(fake.target, retry=FAST) as client:
        events = Collector(client.subscribe_candles([BTC, ETH], **kwargs))
        await events.wait_until(lambda items: bool(items) and isinstance(items[-1], SnapshotEnd))
        await events.stop()
    lost = [e for e in events.items if isinstance(e, ContinuityLost)]
    assert lost == [ContinuityLost((BTC, ETH), since, "no longer retained")]
    fresh = script.requests[2]
    assert (fresh.history, fresh.resume_token) == (fresh_history, "")
    if since is None:
        assert not fresh.HasField("start_time")
    else:
        assert fresh.start_time == to_timestamp(since)


async def test_a_refused_restart_is_raised(fake: FakeService) -> None:
    """A start before the retained data cannot be survived: OutOfRangeError."""
    script = Script(
        ([_c(BTC, 0, 1.0, 0)], grpc.StatusCode.UNAVAILABLE, "going away"),
        ([], grpc.StatusCode.OUT_OF_RANGE, "no longer retained"),
        ([], grpc.StatusCode.OUT_OF_RANGE, "history before 00:05 is no longer retained"),
    )
    fake.handlers["SubscribeCandles"] = script
    await fake.start()
    async with CandlewireClient(fake.target, retry=FAST) as client:
        stream = client.subscribe_candles(BTC)
        assert isinstance(await anext(stream), CandleEvent)
        assert isinstance(await anext(stream), ContinuityLost)
        with pytest.raises(OutOfRangeError, match="before 00:05"):
            await anext(stream)
        assert stream.state == "failed"
    assert len(script.requests) == 3
