"""Fan-out of candle updates to stream subscribers.

Each subscription has a bounded queue, kept in publish order (which is
sequence order per symbol; sequence numbers are per symbol, so entries are
keyed by symbol and sequence number):

* a forming-candle update replaces the pending update of the same candle when
  that is the series' newest pending entry (conflation: an update is a full
  snapshot, so only superseded versions are dropped);
* closed candles are never dropped; a subscription whose queue is full is
  ended with :class:`~candlewire.errors.LimitExceeded` and its queue freed; the
  client resumes with its last resume token and the store replays the rest.

Publishing never awaits, so a slow subscriber cannot delay the others, and the
frames published were encoded once by the store.

The hub is generic in what it carries: candle updates
(:class:`~candlewire.store.base.Update`, keyed by series) and trades
(:class:`~candlewire.store.base.TradeUpdate`, keyed by symbol, always
``closed``: a trade is never conflated, so a trade stream that falls behind
is ended, never thinned). A process has one hub of each.

A hub made with ``conflate=False`` (the trade hub) carries only what is
never conflated, so its queues need none of the conflation's bookkeeping:
each is a plain FIFO, and a published batch reaches a subscription as runs
of consecutive updates of one key (one append of the run, one wake-up),
in publish order. The bound and the error are the same.

A subscriber that waits with a *sink* (:meth:`Subscription.next`) is
handed updates directly while it waits with nothing pending: the publisher
calls the sink instead of queueing the update and waking the subscriber's
task. A sink that cannot take an update now returns False; from then on
until the subscriber's task runs, updates are queued as above (so order is
kept and the bound applies). This is how a face that can write a message
without the stream's own task (the HTTP port's in-process streams) sends a
live update to a thousand streams from one loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import groupby
from operator import attrgetter
from typing import Generic, Protocol, TypeVar

from candlewire.errors import CandlewireError, LimitExceeded, ShuttingDown

__all__ = ["Hub", "Key", "Published", "Sink", "Subscription"]


class Key(Hashable, Protocol):
    """What updates are routed by: a series, or a symbol's trades."""

    @property
    def symbol(self) -> str: ...


class Published(Protocol):
    """What the hub carries (numbered per symbol)."""

    @property
    def seq(self) -> int: ...

    @property
    def series(self) -> Key: ...

    @property
    def open_time(self) -> int: ...

    @property
    def closed(self) -> bool: ...


U = TypeVar("U", bound=Published)
U_contra = TypeVar("U_contra", bound=Published, contravariant=True)

_series = attrgetter("series")


class Sink(Protocol[U_contra]):
    """Takes an update while its subscriber waits with nothing pending."""

    def __call__(self, update: U_contra, /) -> bool:
        """True when the update was taken (sent, or not to be sent); False
        when it cannot be taken now (it is then queued)."""
        ...


class Subscription(Generic[U]):
    """One subscriber's queue. Create it with :meth:`Hub.subscribe`."""

    __slots__ = (
        "_error",
        "_hub",
        "_max_queue",
        "_sink",
        "_timer",
        "_waiter",
        "closed_only",
        "conflated",
        "deadline",
        "series",
    )

    def __init__(
        self, hub: Hub[U], series: frozenset[Key], *, closed_only: bool, max_queue: int
    ) -> None:
        self._hub = hub
        self.series = series
        self.closed_only = closed_only
        self._max_queue = max_queue
        self._waiter: asyncio.Future[bool] | None = None
        self._sink: Sink[U] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        """When the current wait ends (``loop.time()``); a sink that sends
        an update may move it later (a heartbeat follows what was sent)."""
        self._error: Exception | None = None
        """What ended the subscription: a CandlewireError, or what a sink raised."""
        self.conflated = 0

    # The queue: one of the two kinds below.

    def __len__(self) -> int:
        raise NotImplementedError

    def _offer(self, update: U) -> None:
        raise NotImplementedError

    def _offer_run(self, updates: Sequence[U]) -> None:
        """Offer consecutive updates of one key, in order."""
        for update in updates:
            self._offer(update)

    def _clear(self) -> None:
        raise NotImplementedError

    def discard_through(self, position: Mapping[str, int]) -> None:
        """Drop pending updates with sequence numbers up to ``position[symbol]`` (already sent)."""
        raise NotImplementedError

    def pop(self) -> U | None:
        """The next pending update, or None; raises the error that ended the subscription."""
        raise NotImplementedError

    # Shared.

    def _overflow(self) -> None:
        self._fail(
            LimitExceeded(
                f"subscriber fell more than {self._max_queue} updates behind; "
                "resume with the last resume_token"
            )
        )
        self._hub._drop(self)

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._clear()
        self._wake()

    def _wake(self) -> None:
        self._sink = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _sunk(self, update: U) -> bool:
        """Whether the waiting subscriber's sink took ``update``."""
        sink = self._sink
        assert sink is not None
        try:
            if sink(update):
                self._hub.sunk += 1
                return True
        except Exception as error:  # raised in the subscriber's task, not the publisher's
            self._fail(error)
            self._hub._drop(self)
            return True
        self._sink = None  # queued from now on, until the subscriber has run
        return False

    async def next(self, wait: float, sink: Sink[U] | None = None) -> U | None:
        """The next update, or None when none arrived within ``wait`` seconds
        (or by :attr:`deadline`, when a sink moved it).

        With a ``sink``, updates published while this waits with nothing
        pending are handed to the sink instead (see the module docstring);
        the wait goes on until one is queued, or the deadline."""
        update = self.pop()
        if update is not None:
            return update
        # A wait is a future and a deadline. The timer is not re-armed per
        # wait (that would be a heap push and a cancel for every update sent):
        # one timer at a time, which re-arms itself for the newest deadline
        # when it fires early. Only a timer due after the new deadline (a
        # shorter wait than the last) is replaced.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        deadline = self.deadline = loop.time() + wait
        timer = self._timer
        if timer is not None and timer.when() > deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        self._sink = sink
        try:
            woken = await waiter
        finally:
            self._waiter = self._sink = None
        return self.pop() if woken else None

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting now: the next wait arms a new timer
        loop = waiter.get_loop()
        if loop.time() < self.deadline:
            self._timer = loop.call_at(self.deadline, self._expire)
        else:
            self._sink = None
            waiter.set_result(False)

    def close(self) -> None:
        """Stop receiving updates."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._hub._drop(self)


class _Conflating(Subscription[U]):
    """A queue that conflates forming-candle updates (see the module docstring)."""

    __slots__ = ("_last_pending", "_pending")

    def __init__(
        self, hub: Hub[U], series: frozenset[Key], *, closed_only: bool, max_queue: int
    ) -> None:
        super().__init__(hub, series, closed_only=closed_only, max_queue=max_queue)
        self._pending: OrderedDict[tuple[str, int], U] = OrderedDict()
        self._last_pending: dict[Key, U] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def _offer(self, update: U) -> None:
        if self._error is not None or (self.closed_only and not update.closed):
            return
        if self._sink is not None and self._sunk(update):
            return
        last = self._last_pending.get(update.series)
        if last is not None and last.open_time == update.open_time and not last.closed:
            del self._pending[last.series.symbol, last.seq]
            self.conflated += 1
        elif len(self._pending) >= self._max_queue:
            self._overflow()
            return
        self._pending[update.series.symbol, update.seq] = update
        self._last_pending[update.series] = update
        self._wake()

    def _clear(self) -> None:
        self._pending.clear()
        self._last_pending.clear()

    def discard_through(self, position: Mapping[str, int]) -> None:
        pending = self._pending
        for symbol, seq in [k for k in pending if k[1] <= position.get(k[0], 0)]:
            update = pending.pop((symbol, seq))
            if self._last_pending.get(update.series) is update:
                del self._last_pending[update.series]

    def pop(self) -> U | None:
        if self._pending:
            _, update = self._pending.popitem(last=False)
            if self._last_pending.get(update.series) is update:
                del self._last_pending[update.series]
            return update
        if self._error is not None:
            raise self._error
        return None


class _Lossless(Subscription[U]):
    """A plain FIFO, for a hub whose updates are never conflated."""

    __slots__ = ("_queue",)

    def __init__(
        self, hub: Hub[U], series: frozenset[Key], *, closed_only: bool, max_queue: int
    ) -> None:
        super().__init__(hub, series, closed_only=closed_only, max_queue=max_queue)
        self._queue: deque[U] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def _offer(self, update: U) -> None:
        self._offer_run((update,))

    def _offer_run(self, updates: Sequence[U]) -> None:
        if self._error is not None:
            return
        if self.closed_only:
            updates = [u for u in updates if u.closed]
            if not updates:
                return
        if self._sink is not None:
            updates = self._sink_run(updates)
            if not updates:
                return
        if len(self._queue) + len(updates) > self._max_queue:
            self._overflow()
            return
        self._queue.extend(updates)
        self._wake()

    def _sink_run(self, updates: Sequence[U]) -> Sequence[U]:
        """What of ``updates`` the waiting subscriber's sink did not take."""
        for taken, update in enumerate(updates):
            if self._error is not None:
                return ()
            if self._sink is None or not self._sunk(update):
                return updates[taken:]
        return ()

    def _clear(self) -> None:
        self._queue.clear()

    def discard_through(self, position: Mapping[str, int]) -> None:
        queue = self._queue
        if queue:
            self._queue = deque(u for u in queue if u.seq > position.get(u.series.symbol, 0))

    def pop(self) -> U | None:
        if self._queue:
            return self._queue.popleft()
        if self._error is not None:
            raise self._error
        return None


class Hub(Generic[U]):
    """Routes published updates to the subscriptions of their series."""

    def __init__(
        self, *, queue_size: int = 1024, max_subscriptions: int = 10_000, conflate: bool = True
    ) -> None:
        self._queue_size = queue_size
        self._kind: type[Subscription[U]] = _Conflating if conflate else _Lossless
        self._conflate = conflate
        self._max_subscriptions = max_subscriptions
        self._by_series: dict[Key, set[Subscription[U]]] = {}
        self._subscriptions: set[Subscription[U]] = set()
        self._closed = False
        self.published_seq: dict[str, int] = {}
        """Per symbol, the highest sequence number published; every
        subscription saw all of that symbol's updates up to it."""
        self.event_times: dict[str, int] = {}
        """Last upstream event time per symbol (for heartbeats)."""
        self.overflowed = 0
        self.delivered_batches = 0
        self.sunk = 0
        """Updates handed to waiting subscribers' sinks (not queued)."""

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, series: Iterable[Key], *, closed_only: bool = False) -> Subscription[U]:
        if self._closed:
            raise ShuttingDown("the server is shutting down")
        if len(self._subscriptions) >= self._max_subscriptions:
            raise LimitExceeded(
                f"this server has {self._max_subscriptions} streams open", retry_after=5.0
            )
        subscription = self._kind(
            self, frozenset(series), closed_only=closed_only, max_queue=self._queue_size
        )
        self._subscriptions.add(subscription)
        for key in subscription.series:
            self._by_series.setdefault(key, set()).add(subscription)
        return subscription

    def _drop(self, subscription: Subscription[U]) -> None:
        if subscription not in self._subscriptions:
            return
        self._subscriptions.discard(subscription)
        if subscription._error is not None:
            self.overflowed += isinstance(subscription._error, LimitExceeded)
        for key in subscription.series:
            subscribers = self._by_series.get(key)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_series[key]

    def publish(self, updates: Sequence[U]) -> None:
        """Offer updates (in sequence order per symbol) to every subscription of their series."""
        by_series = self._by_series
        published = self.published_seq
        if not self._conflate:
            # Runs of one key, in publish order: a subscription of several
            # keys still sees the updates in publish order.
            for key, group in groupby(updates, _series):
                run = list(group)
                subscribers = by_series.get(key)
                if subscribers:
                    for subscription in tuple(subscribers):
                        subscription._offer_run(run)
                published[key.symbol] = run[-1].seq
            if updates:
                self.delivered_batches += 1
            return
        for update in updates:
            subscribers = by_series.get(update.series)
            if subscribers:
                for subscription in tuple(subscribers):
                    subscription._offer(update)
            published[update.series.symbol] = update.seq  # in order per symbol
        if updates:
            self.delivered_batches += 1

    @property
    def max_queued(self) -> int:
        """The longest queue of any subscription right now."""
        return max((len(s) for s in self._subscriptions), default=0)

    def note_event_time(self, symbol: str, time: int) -> None:
        if time > self.event_times.get(symbol, -1):
            self.event_times[symbol] = time

    def end_all(self, error: CandlewireError) -> None:
        """End every current subscription with ``error`` (new ones are still accepted)."""
        for subscription in tuple(self._subscriptions):
            subscription._fail(error)
            self._drop(subscription)

    def close(self) -> None:
        """End every subscription with ShuttingDown and refuse new ones."""
        self._closed = True
        self.end_all(ShuttingDown("the server is shutting down; reconnect"))
