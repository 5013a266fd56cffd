"""Hub: routing, conflation, bounded queues, shutdown."""

from __future__ import annotations

import pytest

from candlewire.domain import Interval, SeriesKey
from candlewire.errors import LimitExceeded, ShuttingDown
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
    assert hub.published_seq == 3


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
    sub.discard_through(1)
    assert drain(sub) == [2]


async def test_close_ends_subscriptions_and_refuses_new_ones() -> None:
    hub = Hub()
    sub = hub.subscribe([A])
    hub.close()
    with pytest.raises(ShuttingDown):
        await sub.next(1.0)
    with pytest.raises(ShuttingDown):
        hub.subscribe([A])


def test_stream_limit() -> None:
    hub = Hub(max_subscriptions=1)
    hub.subscribe([A])
    with pytest.raises(LimitExceeded) as error:
        hub.subscribe([B])
    assert error.value.retry_after is not None
