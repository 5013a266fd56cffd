"""Rate limits and concurrent-stream limits, in memory or shared through Redis.

Requests per second are limited with GCRA (the generic cell rate algorithm):
one number per subject, the "theoretical arrival time"; a request is allowed
when it is not earlier than that time minus the burst tolerance, and then
moves it on by one interval. It answers the exact delay until the next
request fits, which becomes ``google.rpc.RetryInfo``.

Streams are limited by slots: a subject may hold ``limit`` at once; a slot is
given back when its stream ends.

:class:`RedisLimiter` shares both across replicas: each check is one Lua
script (``scripts/gcra.lua``, ``scripts/slot.lua``) run atomically by Redis
on Redis' own clock, so replicas with skewed clocks agree. Slots are entries
of a sorted set with an expiry; the replica that holds them renews them
every third of their TTL, so the slots of a replica that died free
themselves. One script per check, rather than a library such as ``limits``,
because the check must answer the retry delay in the same round trip, and
``limits`` has no concurrency slots. When Redis cannot be reached the limiter
lets calls through (a limiter must not take the API down with it), counts
the errors and logs once per outage.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Protocol

__all__ = ["Limiter", "MemoryLimiter", "RedisLimiter", "Slot", "script_sources"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Slot:
    """A concurrent-stream slot held by this process."""

    subject: str
    member: str


class Limiter(Protocol):
    """What the gatekeeper asks of a limiter."""

    errors: int

    async def hit(self, subject: str, rate: float, burst: float) -> float:
        """Count one request; 0.0 if allowed, else seconds until it would be."""
        ...

    async def acquire(self, subject: str, limit: int) -> Slot | None:
        """Take a stream slot, or None when ``limit`` are held."""
        ...

    async def release(self, slot: Slot) -> None:
        """Give a slot back."""
        ...

    async def run(self) -> None:
        """Background upkeep until cancelled."""
        ...

    async def close(self) -> None: ...


_NO_WAIT = (0.0, "")


class MemoryLimiter:
    """The limits of one process."""

    def __init__(self, *, max_subjects: int = 100_000) -> None:
        self._tat: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._max_subjects = max_subjects
        self._members = itertools.count()
        self.errors = 0

    async def hit(self, subject: str, rate: float, burst: float) -> float:
        return self.hit_now(subject, rate, burst)

    def hit_now(self, subject: str, rate: float, burst: float) -> float:
        interval = 1.0 / rate
        limit = (subject, interval, interval * (max(burst, 1.0) - 1.0), "")
        return self.take_all((limit,), time.monotonic())[0]

    def take_all(
        self, limits: Iterable[tuple[str, float, float, str]], now: float
    ) -> tuple[float, str]:
        """Take one request from each of ``limits`` (subject, interval
        between requests, tolerance: how far ahead a subject may run, and
        what to say if it refuses), in order, at ``now``: the wait and the
        refusal of the first that refuses, or ``(0.0, "")``. For a caller
        that checks the same limits on every call (computed once)."""
        tats = self._tat
        for subject, interval, tolerance, refusal in limits:
            tat = tats.get(subject, now)
            if tat < now:
                tat = now
            allowed_at = tat - tolerance
            if now < allowed_at:
                return allowed_at - now, refusal
            if len(tats) >= self._max_subjects and subject not in tats:
                self._sweep(now)
            tats[subject] = tat + interval
        return _NO_WAIT

    def _sweep(self, now: float) -> None:
        """Forget subjects whose bucket is full again (they behave as new ones)."""
        for subject in [s for s, tat in self._tat.items() if tat <= now]:
            del self._tat[subject]

    async def acquire(self, subject: str, limit: int) -> Slot | None:
        held = self._held.get(subject, 0)
        if held >= limit:
            return None
        self._held[subject] = held + 1
        return Slot(subject, str(next(self._members)))

    async def release(self, slot: Slot) -> None:
        held = self._held.get(slot.subject, 0) - 1
        if held > 0:
            self._held[slot.subject] = held
        else:
            self._held.pop(slot.subject, None)

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


def script_sources() -> dict[str, str]:
    """The Lua scripts of :class:`RedisLimiter`, by name."""
    directory = files("candlewire.api").joinpath("scripts")
    return {
        name: directory.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        for name in ("gcra", "slot", "renew")
    }


class RedisLimiter:
    """Limits shared by every replica using the same Redis (and key prefix)."""

    def __init__(
        self, url: str, *, prefix: str = "cw:", slot_ttl: float = 30.0, timeout: float = 1.0
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.cluster import RedisCluster

        self.cluster = url.startswith(("redis+cluster://", "rediss+cluster://"))
        self._redis: Any
        if self.cluster:
            self._redis = RedisCluster.from_url(
                url.replace("+cluster", "", 1),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        else:
            self._redis = aioredis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        scripts = script_sources()
        self._gcra = self._redis.register_script(scripts["gcra"])
        self._slot = self._redis.register_script(scripts["slot"])
        self._renew = self._redis.register_script(scripts["renew"])
        self._prefix = prefix
        self._ttl_ms = max(1000, round(slot_ttl * 1000))
        self._replica = f"{socket.gethostname()}/{os.getpid()}/{os.urandom(3).hex()}"
        self._members = itertools.count()
        self._held: dict[str, set[str]] = {}
        self._failing = False
        self.errors = 0

    def _key(self, kind: str, subject: str) -> str:
        return f"{self._prefix}limit:{kind}:{{{subject}}}"

    async def _call(self, call: Awaitable[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            result = await call
        except (RedisError, OSError) as error:
            self.errors += 1
            if not self._failing:
                self._failing = True
                log.warning("rate limits: Redis unreachable, letting calls through: %s", error)
            return None
        if self._failing:
            self._failing = False
            log.info("rate limits: Redis reachable again")
        return result

    async def hit(self, subject: str, rate: float, burst: float) -> float:
        interval = 1_000_000.0 / rate
        tolerance = interval * (max(burst, 1.0) - 1.0)
        waited = await self._call(
            self._gcra(keys=[self._key("rate", subject)], args=[interval, tolerance])
        )
        return 0.0 if not waited else int(waited) / 1_000_000

    async def acquire(self, subject: str, limit: int) -> Slot | None:
        member = f"{self._replica}/{next(self._members)}"
        key = self._key("streams", subject)
        taken = await self._call(self._slot(keys=[key], args=[member, limit, self._ttl_ms]))
        if taken == 0:
            return None
        self._held.setdefault(key, set()).add(member)
        return Slot(subject, member)

    async def release(self, slot: Slot) -> None:
        key = self._key("streams", slot.subject)
        members = self._held.get(key)
        if members is not None:
            members.discard(slot.member)
            if not members:
                del self._held[key]
        await self._call(self._redis.zrem(key, slot.member))

    async def run(self) -> None:
        """Renew this replica's slots every third of their TTL."""
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            for key, members in list(self._held.items()):
                if members:
                    await self._call(self._renew(keys=[key], args=[self._ttl_ms, *members]))

    async def close(self) -> None:
        await self._redis.aclose()
