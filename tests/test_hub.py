"""Hub: routing, conflation, bounded queues, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from candlewire.domain import Interval, SeriesKey
from candlewire.errors import DataExpired, LimitExceeded, ShuttingDown
from candlewire.hub import Hub
from candlewire.store.base import Update

A = SeriesKey("A", Interval.M1)
B = SeriesKey("B", Interval.M1)


def update(seq: int, series: SeriesKey, open_time: int, *, closed: bool = False) -> Update:
    return Update(seq, series, open_time, seq, closed, f"{seq}".encode())


def drain(subscription: object) -> list[int]:
    out = []
    while (u := subscription.pop()) is not None:  # type: ignore[attr-defined]
        out.append(u.seq)
    return out


def test_routes_only_subscribed_series_in_sequence_order() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    hub.publish([update(1, A, 0), update(2, B, 0), update(3, A, 60)])
    assert drain(sub) == [1, 3]
    assert hub.published_seq == {"A": 3, "B": 2}


def test_forming_updates_conflate_to_the_newest_closed_are_kept() -> None:
    hub = Hub()
    sub = hub.subscribe([A, B])
    hub.publish([update(1, A, 0), update(2, B, 0), update(3, A, 0), update(4, A, 0, closed=True)])
    hub.publish([update(5, A, 60), update(6, A, 0, closed=True)])  # a correction after close
    hub.publish([update(7, A, 60)])  # not the series' newest pending entry: kept apart
    assert drain(sub) == [2, 4, 5, 6, 7]
    assert sub.conflated == 2


def test_closed_only_ignores_forming_updates() -> None:
    hub = Hub()
    sub = hub.subscribe([A], closed_only=True)
    hub.publish([update(1, A, 0), update(2, A, 0, closed=True)])
    assert drain(sub) == [2]


def test_a_full_queue_ends_only_that_subscription() -> None:
    hub = Hub(queue_size=3)
    slow, fast = hub.subscribe([A]), hub.subscribe([A])
    for seq in range(1, 5):
        hub.publish([update(seq, A, seq * 60, closed=True)])
        fast.pop()
    with pytest.raises(LimitExceeded):
        slow.pop()
    assert len(hub) == 1
    assert hub.overflowed == 1
    hub.publish([update(9, A, 900, closed=True)])
    assert drain(fast) == [9]


def test_discard_through_drops_what_was_already_sent() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    hub.publish([update(1, A, 0, closed=True), update(2, A, 60), update(3, B, 0)])
    sub.discard_through({"A": 1})
    assert drain(sub) == [2]


def test_sequence_numbers_are_per_symbol() -> None:
    # Each symbol numbers its own updates: equal numbers of two symbols are
    # distinct entries, and discarding is per symbol.
    hub = Hub()
    sub = hub.subscribe([A, B])
    hub.publish([update(1, A, 0), update(1, B, 0), update(2, B, 0, closed=True)])
    hub.publish([update(2, A, 60, closed=True), update(3, B, 60)])
    assert hub.published_seq == {"A": 2, "B": 3}
    sub.discard_through({"A": 1, "B": 2})
    pending = []
    while (u := sub.pop()) is not None:
        pending.append((u.series.symbol, u.seq))
    assert pending == [("A", 2), ("B", 3)]
    hub.publish([update(3, A, 60), update(4, A, 60)])  # conflated by (symbol, seq)
    assert [(u.series.symbol, u.seq) for u in [sub.pop()]] == [("A", 4)]
    assert sub.pop() is None


async def test_close_ends_subscriptions_and_refuses_new_ones() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    hub.close()
    with pytest.raises(ShuttingDown):
        await sub.next(1.0)
    with pytest.raises(ShuttingDown):
        hub.subscribe([A])


async def test_end_all_ends_current_subscriptions_and_accepts_new_ones() -> None:
    hub = Hub()
    old = hub.subscribe([A])
    hub.publish([update(1, A, 0)])
    hub.end_all(DataExpired("replaced"))
    with pytest.raises(DataExpired):
        await old.next(1.0)  # the pending update is dropped with the subscription
    new = hub.subscribe([A])
    hub.publish([update(2, A, 60)])
    assert drain(new) == [2]
    assert len(hub) == 1


def test_stream_limit() -> None:
    hub = Hub(max_subscriptions=1)
    hub.subscribe([A])
    with pytest.raises(LimitExceeded) as error:
        hub.subscribe([B])
    assert error.value.retry_after is not None


async def test_next_returns_none_when_nothing_arrives_within_the_wait() -> None:
    sub = Hub().subscribe([A])
    assert await sub.next(0.01) is None
    assert await sub.next(0) is None


async def test_next_returns_an_update_published_during_the_wait() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    loop = asyncio.get_running_loop()
    loop.call_soon(hub.publish, [update(1, A, 0)])  # runs once next() is waiting
    started = loop.time()
    got = await sub.next(30.0)
    assert got is not None and got.seq == 1
    assert loop.time() - started < 5.0  # woken by the publish, not by the deadline


async def test_a_shorter_wait_after_a_longer_one_keeps_its_own_deadline() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    loop = asyncio.get_running_loop()
    loop.call_soon(hub.publish, [update(1, A, 0)])
    assert await sub.next(30.0) is not None  # leaves a timer due in 30 s
    started = loop.time()
    assert await sub.next(0.01) is None
    assert loop.time() - started < 5.0


async def test_repeated_waits_arm_one_timer_and_close_cancels_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    loop = asyncio.get_running_loop()
    armed: list[asyncio.TimerHandle] = []
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        handle = call_at(when, callback, *args)
        armed.append(handle)
        return handle

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    for seq in range(1, 201):
        loop.call_soon(hub.publish, [update(seq, A, seq * 60, closed=True)])
        got = await sub.next(30.0)
        assert got is not None and got.seq == seq
    assert len(armed) == 1  # one timer for 200 waits, not one each
    sub.close()
    assert armed[0].cancelled()


async def test_a_cancelled_wait_leaves_the_subscription_usable() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    waiting = asyncio.ensure_future(sub.next(30.0))
    await asyncio.sleep(0)  # let it start waiting
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await sub.next(0.01) is None
    hub.publish([update(1, A, 0)])
    got = await sub.next(0.01)
    assert got is not None and got.seq == 1


# --- a hub that never conflates (the trade hub) ------------------------------------------


def closed_run(series: SeriesKey, *seqs: int) -> list[Update]:
    return [update(seq, series, seq * 60, closed=True) for seq in seqs]


def test_lossless_hub_keeps_publish_order_across_the_keys_of_a_subscription() -> None:
    hub: Hub[Update] = Hub(conflate=False)
    both, only_b = hub.subscribe([A, B]), hub.subscribe([B])
    # Runs of one key, interleaved: a subscription of both keys sees them as published.
    hub.publish([*closed_run(A, 1, 2), *closed_run(B, 1), *closed_run(A, 3), *closed_run(B, 2, 3)])
    order = []
    while (u := both.pop()) is not None:
        order.append((u.series.symbol, u.seq))
    assert order == [("A", 1), ("A", 2), ("B", 1), ("A", 3), ("B", 2), ("B", 3)]
    assert drain(only_b) == [1, 2, 3]
    assert hub.published_seq == {"A": 3, "B": 3}


def test_lossless_hub_never_conflates_forming_updates() -> None:
    hub: Hub[Update] = Hub(conflate=False)
    sub = hub.subscribe([A])
    hub.publish([update(1, A, 0), update(2, A, 0), update(3, A, 0)])
    assert drain(sub) == [1, 2, 3] and sub.conflated == 0


def test_lossless_hub_ends_a_subscription_a_batch_would_overfill() -> None:
    hub: Hub[Update] = Hub(queue_size=4, conflate=False)
    slow, fast = hub.subscribe([A]), hub.subscribe([A])
    hub.publish(closed_run(A, 1, 2, 3))
    assert drain(fast) == [1, 2, 3]
    assert hub.max_queued == 3
    hub.publish(closed_run(A, 4))  # 4 pending: at the bound, still served
    assert len(hub) == 2 and drain(fast) == [4]
    hub.publish(closed_run(A, 5, 6))  # 6 pending would be past it
    with pytest.raises(LimitExceeded):
        slow.pop()
    assert len(hub) == 1 and hub.overflowed == 1
    assert drain(fast) == [5, 6]


def test_lossless_hub_discards_what_was_sent_per_symbol() -> None:
    hub: Hub[Update] = Hub(conflate=False)
    sub = hub.subscribe([A, B])
    hub.publish([*closed_run(A, 1, 2), *closed_run(B, 1, 2, 3)])
    sub.discard_through({"A": 1, "B": 2})
    assert [(u.series.symbol, u.seq) for u in [sub.pop(), sub.pop()]] == [("A", 2), ("B", 3)]
    assert sub.pop() is None


async def test_lossless_hub_wakes_a_waiter_once_per_run_and_not_for_filtered_updates() -> None:
    hub: Hub[Update] = Hub(conflate=False)
    sub = hub.subscribe([A], closed_only=True)
    loop = asyncio.get_running_loop()
    # A forming update only (filtered out), then a run: the wait ends with the run's first.
    loop.call_soon(hub.publish, [update(1, A, 0)])
    loop.call_soon(hub.publish, closed_run(A, 2, 3))
    got = await sub.next(30.0)
    assert got is not None and got.seq == 2
    assert drain(sub) == [3]


# --- sinks: updates handed to a waiting subscriber without waking it ----------------------


class Taker:
    """A sink that takes updates until told to refuse."""

    def __init__(self, *, refuse_after: int | None = None) -> None:
        self.taken: list[int] = []
        self.refused: list[int] = []
        self.refuse_after = refuse_after

    def __call__(self, update: Update) -> bool:
        if self.refuse_after is not None and len(self.taken) >= self.refuse_after:
            self.refused.append(update.seq)
            return False
        self.taken.append(update.seq)
        return True


async def waiting(sub: Any, wait: float, sink: Any) -> asyncio.Future[Any]:
    """``sub.next(wait, sink)`` started, and waiting."""
    task = asyncio.ensure_future(sub.next(wait, sink))
    await asyncio.sleep(0)  # one turn of the loop: it is waiting now
    assert not task.done()
    return task


async def test_a_waiting_subscriber_is_handed_updates_by_its_sink_and_not_woken() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    sink = Taker(refuse_after=3)
    task = await waiting(sub, 30.0, sink)
    # Forming updates of one candle: not conflated, each is taken as published.
    hub.publish([update(1, A, 0), update(2, A, 0)])
    hub.publish([update(3, A, 0, closed=True)])
    await asyncio.sleep(0)  # a woken task would have run by now
    assert sink.taken == [1, 2, 3] and not task.done()
    assert len(sub) == 0 and hub.sunk == 3
    # Refused: queued, and the waiter woken; what follows is queued behind it.
    hub.publish([update(4, A, 60, closed=True), update(5, A, 120)])
    got = await task
    assert got is not None and got.seq == 4
    assert sink.refused == [4]  # 5 was not offered to the sink: it would have jumped 4
    assert drain(sub) == [5] and hub.sunk == 3


async def test_a_sink_is_offered_nothing_while_updates_are_pending() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    hub.publish([update(1, A, 0, closed=True)])
    sink = Taker()
    got = await sub.next(30.0, sink)
    assert got is not None and got.seq == 1 and sink.taken == []
    hub.publish([update(2, A, 60)])  # not waiting now: queued
    assert sink.taken == [] and drain(sub) == [2]


async def test_a_sink_that_moves_the_deadline_lengthens_the_wait() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    loop = asyncio.get_running_loop()

    def postpone(u: Update) -> bool:
        sub.deadline = loop.time() + 0.3
        return True

    started = loop.time()
    task = await waiting(sub, 0.05, postpone)
    hub.publish([update(1, A, 0)])
    assert await task is None
    assert loop.time() - started >= 0.3  # the first timer fired early and was re-armed


async def test_a_sink_that_raises_ends_its_own_subscription_only() -> None:
    hub = Hub()
    broken, other = hub.subscribe([A]), hub.subscribe([A])

    def explode(u: Update) -> bool:
        raise RuntimeError("broken sink")

    task = await waiting(broken, 30.0, explode)
    hub.publish([update(1, A, 0)])  # the publisher is not the one to see the error
    with pytest.raises(RuntimeError, match="broken sink"):
        await task
    assert len(hub) == 1 and drain(other) == [1]
    hub.publish([update(2, A, 60)])
    assert drain(other) == [2]


async def test_a_refusing_sink_leaves_the_queue_bounded() -> None:
    hub = Hub(queue_size=2)
    sub = hub.subscribe([A])
    task = await waiting(sub, 30.0, Taker(refuse_after=0))
    hub.publish([update(seq, A, seq * 60, closed=True) for seq in range(1, 4)])
    with pytest.raises(LimitExceeded):
        await task
    assert hub.overflowed == 1


async def test_lossless_hub_hands_a_run_to_the_sink_until_it_refuses() -> None:
    hub: Hub[Update] = Hub(conflate=False)
    sub = hub.subscribe([A])
    sink = Taker(refuse_after=2)
    task = await waiting(sub, 30.0, sink)
    hub.publish(closed_run(A, 1, 2, 3, 4, 5))
    got = await task
    assert sink.taken == [1, 2] and sink.refused == [3]
    assert got is not None and got.seq == 3 and drain(sub) == [4, 5]
    assert hub.sunk == 2
