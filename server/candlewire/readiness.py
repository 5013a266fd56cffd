"""Readiness: whether this process should receive traffic, and why not.

:func:`evaluate` decides from a :class:`Observed`, what the process knows at
one instant (its role, its follower, its lease, its feed, the store's last
answer); it is pure, so every rule is visible here. :class:`ReadinessWatch`
observes, pings the store and publishes the verdict (the health service's
``marketdata.v1.MarketDataService`` status) whenever it changes, every
``interval`` seconds or at once when asked (:meth:`ReadinessWatch.recheck`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from candlewire.errors import CandlewireError
from candlewire.store.base import Store

__all__ = ["DEPENDENCY_SERVICES", "Observed", "ReadinessWatch", "dependencies", "evaluate"]

log = logging.getLogger(__name__)

OK = "ok"


@dataclass(frozen=True, slots=True)
class Observed:
    """What readiness is decided from, observed at one instant."""

    now: float
    """``time.monotonic()`` when observed."""
    store_error: str | None = None
    """Why the store did not answer the last ping (None: it answered)."""
    feed_error: str | None = None
    """Why the feed's symbols are not known yet (None: they are)."""
    follows: bool = False
    """The process serves from a shared store through a follower of its update log."""
    following: bool = False
    """... and the follower follows it now."""
    ingests: bool = True
    """The process runs a feed (at once, or while it holds the lease)."""
    leased: bool = False
    """Ingestion runs under a lease (a shared store) ..."""
    holding: bool = False
    """... and this process holds it."""
    feed_status: tuple[bool, str] | None = None
    """The feed's own report ``(healthy, why not)``, for feeds that give one."""
    backfilled: bool = False
    """The feed's history is loaded."""
    last_receive: float | None = None
    """``time.monotonic()`` when the feed last delivered data (None: never)."""
    stale_after: float = 10.0
    """Seconds without data after which the feed counts as stale."""
    history_error: str | None = None
    """Why the history tier (PostgreSQL) cannot be used now (None: it can, or there is none)."""
    history: bool = False
    """The process has a history tier (PostgreSQL)."""


DEPENDENCY_SERVICES = {
    "store": "candlewire.store",
    "feed": "candlewire.feed",
    "history": "candlewire.history",
}
"""The health-service name under which each dependency's state is published.

Readiness (``marketdata.v1.MarketDataService``) says whether to send this
process traffic; these say which dependency is missing, to a probe, an
operator (``grpc-health-probe -service candlewire.history``) or an alert,
including the ones that leave the process ready but degraded.
"""


def dependencies(seen: Observed) -> dict[str, bool]:
    """Whether each dependency this process uses is usable now.

    ``store``: the hot store answers (always, in memory). ``feed``: the
    upstream feed's symbols are known, it reports itself healthy and it
    delivered data within ``stale_after``; only where this process ingests
    now (not an API replica, not an ingestor standing by). ``history``:
    PostgreSQL answers; only with a history tier.
    """
    found = {"store": seen.store_error is None}
    if seen.ingests and (not seen.leased or seen.holding):
        last = seen.last_receive
        found["feed"] = (
            seen.feed_error is None
            and (seen.feed_status is None or seen.feed_status[0])
            and last is not None
            and seen.now - last <= seen.stale_after
        )
    if seen.history:
        found["history"] = seen.history_error is None
    return found


def evaluate(seen: Observed) -> tuple[bool, str]:
    """``(ready, reason)``: the reason names what is missing, or says ok.

    PostgreSQL away leaves the process ready, degraded: what the hot store
    holds is still served (requests that need history fail with UNAVAILABLE),
    and the reason names the missing dependency.
    """
    ready, why = _evaluate(seen)
    if ready and seen.history_error is not None:
        return True, f"degraded: history store (PostgreSQL) unavailable: {seen.history_error}"
    return ready, why


def _evaluate(seen: Observed) -> tuple[bool, str]:
    if seen.store_error is not None:
        return False, f"store unavailable: {seen.store_error}"
    if seen.feed_error is not None:
        return False, seen.feed_error
    if seen.follows and not seen.following:
        return False, "not following the store's updates"
    if seen.follows and not seen.ingests:
        return True, OK  # API only: the store and the follower are all it needs
    if seen.leased and not seen.holding:
        return True, "ok (ingestion standing by: another process holds the lease)"
    if seen.feed_status is not None and not seen.feed_status[0]:
        return False, seen.feed_status[1]
    if not seen.backfilled:
        return False, "backfill in progress"
    last = seen.last_receive
    if last is None or seen.now - last > seen.stale_after:
        return False, "upstream feed is stale"
    return True, OK


class ReadinessWatch:
    """Publishes readiness while the process runs.

    ``observe(store_error)`` returns what the process knows now;
    ``publish(ready, dependencies)`` sets the health statuses (readiness,
    and each dependency's: see :func:`dependencies`, absent ones are not
    used by the process now); ``store_answered()`` runs
    after each ping the store answered (the ingestor flushes what it
    buffered while the store was away).
    """

    def __init__(
        self,
        store: Store,
        observe: Callable[[str | None], Observed],
        publish: Callable[[bool, dict[str, bool]], Awaitable[None]],
        *,
        store_answered: Callable[[], Awaitable[None]] | None = None,
        interval: float = 0.2,
    ) -> None:
        self._store = store
        self._observe = observe
        self._publish = publish
        self._store_answered = store_answered
        self._interval = interval
        self._recheck = asyncio.Event()
        self._stopping = False
        self.ready = False
        self.reason = ""
        self.dependencies: dict[str, bool] = {}

    def recheck(self) -> None:
        """Evaluate again now rather than at the next interval."""
        self._recheck.set()

    def stop(self) -> None:
        """End :meth:`run` at its next round (the verdict stays as it was)."""
        self._stopping = True
        self._recheck.set()

    async def run(self) -> None:
        while not self._stopping:
            store_error: str | None = None
            try:
                await self._store.ping()
            except CandlewireError as error:
                store_error = str(error)
            else:
                if self._store_answered is not None:
                    with contextlib.suppress(CandlewireError):
                        await self._store_answered()
            seen = self._observe(store_error)
            ready, why = evaluate(seen)
            found = dependencies(seen)
            if ready != self.ready or why != self.reason or found != self.dependencies:
                log.log(
                    logging.INFO if ready else logging.WARNING,
                    "readiness %s: %s",
                    "SERVING" if ready else "NOT_SERVING",
                    why,
                )
                self.ready, self.reason, self.dependencies = ready, why, found
                await self._publish(ready, found)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._recheck.wait()
            self._recheck.clear()
