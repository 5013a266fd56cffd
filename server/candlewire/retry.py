"""The one retry primitive of the service: jittered, capped exponential backoff
with an error classifier.

Every reconnect loop (the store connection, the replica's follower, a venue's
websocket and REST sync, every future feed) is written the same way::

    retry = Retry(Backoff(initial=0.1, maximum=5.0), retryable=is_transient, name="redis")
    while True:
        try:
            async with connect() as link:
                retry.connected()          # the backoff restarts after a healthy spell
                await serve(link)
        except Exception as error:
            await retry.wait(error)        # re-raises what a retry cannot fix

:meth:`Retry.wait` re-raises an error its classifier does not call retryable
(a bug, a refused credential, a bad URL), so retrying never hides a
programming error, and with ``attempts`` gives up after that many
consecutive failures. Delays grow from ``initial`` by ``multiplier`` up to
``maximum`` and are drawn from the upper ``jitter`` fraction of that ceiling,
so a fleet of replicas reconnecting to one dependency spreads out. A loop
that reports its state (health, a feed's status) takes the delay from
:meth:`Retry.delay_for` and sleeps itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff", "Retry", "transient"]

log = logging.getLogger(__name__)


def transient(error: BaseException) -> bool:
    """The default classifier: network trouble and our dependency errors."""
    from candlewire.errors import DependencyUnavailable

    return isinstance(error, OSError | TimeoutError | DependencyUnavailable)


@dataclass(slots=True)
class Backoff:
    """Capped exponential delays with jitter; stateful (:meth:`next`, :meth:`reset`).

    The n-th delay since the last reset is drawn uniformly from
    ``[(1 - jitter) * c, c]`` where ``c = min(maximum, initial * multiplier**n)``.
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    rng: Callable[[], float] = field(default=random.random, repr=False)
    attempt: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("Backoff needs 0 < initial <= maximum")
        if self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("Backoff needs multiplier >= 1 and 0 <= jitter <= 1")

    def next(self) -> float:
        """The next delay in seconds."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(self.attempt, 64))
        self.attempt += 1
        return ceiling * (1 - self.jitter * self.rng())

    def reset(self) -> None:
        """Start again from ``initial``."""
        self.attempt = 0


class Retry:
    """A reconnect loop's state: its backoff, its classifier and its log lines.

    ``reset_after``: a connection that stayed up that many seconds (see
    :meth:`connected`) counts as healthy, and the next failure starts the
    backoff from the beginning. ``attempts``: the failure that makes this many
    in a row is re-raised instead of retried (None: retry for ever).
    ``on_retry(error, delay)`` is called before each wait (for status
    reporting); the first failure after a success is logged at WARNING, the
    ones that follow at DEBUG, so an outage is one line, not a flood.
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        name: str,
        retryable: Callable[[BaseException], bool] = transient,
        reset_after: float = 0.0,
        attempts: int | None = None,
        on_retry: Callable[[BaseException, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff
        self.name = name
        self.retryable = retryable
        self.reset_after = reset_after
        if attempts is not None and attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.on_retry = on_retry
        self.failures = 0
        """Consecutive failures since the last healthy spell."""
        self._clock = clock
        self._since: float | None = None

    def connected(self) -> None:
        """A connection is up: if it lasts ``reset_after`` s, the backoff restarts."""
        self._since = self._clock()
        if self.reset_after <= 0:
            self.succeeded()

    def succeeded(self) -> None:
        """The operation worked: the next failure starts from ``initial``."""
        if self.failures:
            log.info("%s: working again after %d failed attempts", self.name, self.failures)
        self.failures = 0
        self.backoff.reset()
        self._since = None

    def delay_for(self, error: BaseException) -> float:
        """The delay before the next attempt; re-raises ``error`` if not
        retryable, or when it is the last of ``attempts``."""
        if not self.retryable(error):
            raise error
        since, self._since = self._since, None
        if since is not None and self._clock() - since >= self.reset_after:
            self.succeeded()
        self.failures += 1
        if self.attempts is not None and self.failures >= self.attempts:
            log.warning(
                "%s: %s; giving up after %d attempts", self.name, _describe(error), self.failures
            )
            raise error
        delay = self.backoff.next()
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "%s: %s; retrying in %.2fs", self.name, _describe(error), delay)
        if self.on_retry is not None:
            self.on_retry(error, delay)
        return delay

    async def wait(self, error: BaseException) -> None:
        """Sleep before the next attempt; re-raise ``error`` if it is not retryable."""
        await asyncio.sleep(self.delay_for(error))


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
