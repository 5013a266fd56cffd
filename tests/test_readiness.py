"""Readiness rules on their own: each input, and the reason it gives."""

from __future__ import annotations

from dataclasses import replace

import pytest

from candlewire.readiness import Observed, dependencies, evaluate

# A process with a store of its own whose feed is loaded and fresh.
FRESH = Observed(now=100.0, backfilled=True, last_receive=99.0, stale_after=10.0)
# A serving replica of a shared store that also ingests under a lease it holds.
REPLICA = replace(FRESH, follows=True, following=True, leased=True, holding=True)


@pytest.mark.parametrize(
    ("seen", "verdict"),
    [
        (FRESH, (True, "ok")),
        (replace(FRESH, backfilled=False), (False, "backfill in progress")),
        (replace(FRESH, last_receive=None), (False, "upstream feed is stale")),
        (replace(FRESH, last_receive=89.9), (False, "upstream feed is stale")),
        (replace(FRESH, last_receive=90.0), (True, "ok")),
        (replace(FRESH, feed_status=(True, "ok")), (True, "ok")),
        (
            replace(FRESH, feed_status=(False, "Binance stream-0 down: refused")),
            (False, "Binance stream-0 down: refused"),
        ),
        (
            replace(FRESH, store_error="redis: connection refused"),
            (False, "store unavailable: redis: connection refused"),
        ),
        (REPLICA, (True, "ok")),
        (replace(REPLICA, following=False), (False, "not following the store's updates")),
        # API only: the follower is all it needs, whatever a feed would say.
        (replace(REPLICA, ingests=False, leased=False, backfilled=False), (True, "ok")),
        (
            replace(REPLICA, holding=False, backfilled=False),
            (True, "ok (ingestion standing by: another process holds the lease)"),
        ),
        (replace(REPLICA, holding=True, backfilled=False), (False, "backfill in progress")),
        (
            replace(REPLICA, following=False, store_error="redis: timeout"),
            (False, "store unavailable: redis: timeout"),
        ),
    ],
)
def test_verdicts_and_reasons(seen: Observed, verdict: tuple[bool, str]) -> None:
    assert evaluate(seen) == verdict


@pytest.mark.parametrize(
    ("seen", "found"),
    [
        (FRESH, {"store": True, "feed": True}),
        (replace(FRESH, last_receive=89.9), {"store": True, "feed": False}),
        (replace(FRESH, feed_error="symbols not known"), {"store": True, "feed": False}),
        (replace(FRESH, feed_status=(False, "down")), {"store": True, "feed": False}),
        (replace(FRESH, store_error="refused"), {"store": False, "feed": True}),
        # With a history tier, PostgreSQL is named whether or not the process is ready.
        (replace(FRESH, history=True), {"store": True, "feed": True, "history": True}),
        (
            replace(FRESH, history=True, history_error="refused"),
            {"store": True, "feed": True, "history": False},
        ),
        # No feed where the process does not ingest now: an API replica, a standby.
        (replace(REPLICA, ingests=False, leased=False), {"store": True}),
        (replace(REPLICA, holding=False), {"store": True}),
        (REPLICA, {"store": True, "feed": True}),
    ],
)
def test_dependencies_name_what_is_missing(seen: Observed, found: dict[str, bool]) -> None:
    assert dependencies(seen) == found


def test_a_missing_history_store_leaves_the_process_ready_and_says_so() -> None:
    seen = replace(FRESH, history=True, history_error="refused")
    assert evaluate(seen)[0] is True
    assert dependencies(seen)["history"] is False
