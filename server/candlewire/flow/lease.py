"""Leased ingestion: one active ingestor per shard among any number of processes.

The lease is a Redis key with an expiry whose value starts with a fencing
token, a number that grows with every acquisition (see
:meth:`LeaseStore.acquire_lease`, Redis in
:class:`~candlewire.store.redis.RedisStore`). The holder renews it every third of its
time to live; a process that cannot take it tries again every
``ttl / 5`` seconds, so when a holder dies another one takes over within
about ``1.2 * ttl``. The store's write scripts compare the token with the
lease, so a holder that was paused past its expiry (and whose lease another
process took) has its writes refused (:class:`~candlewire.errors.LeaseLost`)
and stops.

A holder that loses the lease only because Redis was away, and gets it back
with the very next token (nobody else held it meanwhile), keeps its state and
its buffered candles; otherwise it starts afresh: a new ingestor aligned with
what is stored, then the feed's backfill, then live data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from candlewire.errors import LeaseLost, StoreUnavailable
from candlewire.store.base import LeaseStore
from candlewire.tasks import cancel_and_wait, checkpoint

__all__ = ["LeasedIngestion", "owner_name"]

log = logging.getLogger(__name__)


def owner_name() -> str:
    """Who holds a lease, for operators reading the key."""
    return f"{socket.gethostname()}/{os.getpid()}"


class LeasedIngestion:
    """Runs ``ingest(fresh)`` while this process holds lease ``shard``.

    ``ingest`` runs the feed into the store until cancelled; ``fresh`` is
    False when it continues the previous run's state (see module docstring).
    """

    def __init__(
        self,
        store: LeaseStore,
        shard: str,
        ingest: Callable[[bool], Coroutine[Any, Any, None]],
        *,
        ttl: float = 5.0,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._shard = shard
        self._ingest = ingest
        self._ttl = ttl
        self._owner = owner or owner_name()
        self.holding = False
        self.acquisitions = 0

    async def run(self) -> None:
        last: int | None = None
        announced = False
        while True:
            checkpoint()
            try:
                value = await self._store.acquire_lease(self._shard, self._owner, self._ttl)
            except StoreUnavailable:
                value = None
            if value is None:
                if not announced:
                    log.info("lease %s is held elsewhere; standing by", self._shard)
                    announced = True
                await asyncio.sleep(self._ttl / 5)
                continue
            announced = False
            token = int(value.split(":", 1)[0])
            fresh = last is None or token != last + 1
            last = token
            self.acquisitions += 1
            resuming = "" if fresh else ", resuming"
            log.info("lease %s taken (token %d)%s", self._shard, token, resuming)
            self._store.fence(self._shard, value)
            self.holding = True
            try:
                await self._hold(value, fresh)
            except LeaseLost as error:
                log.warning("lease %s lost: %s", self._shard, error)
            finally:
                self.holding = False

    async def _hold(self, value: str, fresh: bool) -> None:
        work = asyncio.create_task(self._ingest(fresh), name=f"ingest-{self._shard}")
        try:
            while True:
                checkpoint()
                done, _ = await asyncio.wait({work}, timeout=self._ttl / 3)
                if done:
                    work.result()  # LeaseLost from a refused write, or a bug
                    return
                try:
                    held = await self._store.renew_lease(self._shard, value, self._ttl)
                except StoreUnavailable:
                    continue  # the ingestor buffers; the scripts fence it when Redis is back
                if not held:
                    raise LeaseLost(f"lease {self._shard} expired or was taken")
        finally:
            with contextlib.suppress(LeaseLost):
                await cancel_and_wait(work)

    async def release(self) -> None:
        """Give the lease up at shutdown, so a standby takes over at once."""
        holder = None
        with contextlib.suppress(StoreUnavailable):
            holder = await self._store.lease_holder(self._shard)
        if holder is not None and holder.endswith(f":{self._owner}"):
            with contextlib.suppress(StoreUnavailable):
                await self._store.renew_lease(self._shard, holder, 0)
