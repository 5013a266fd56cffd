"""A streamed response's body, written in order by its pump or by the hub.

The :class:`~candlewire.api.outlet.Outlet` of the HTTP faces' in-process
streams. Granian's ``send`` does its work when called: it hands the bytes
to the connection's bounded channel and returns an awaitable that is
already finished, or, when the channel is full (the client does not read),
one that finishes when the bytes are taken. So a live update can be
written to a thousand responses from the publisher's loop, each write a
call: :meth:`ResponseOutlet.write`.

A write that did not finish at once leaves the outlet not ready: the hub
queues what follows, the stream's task wakes, and the pump's next
:meth:`~ResponseOutlet.send` first waits for that write, so the bytes stay
in order and a client that does not read meets the bounded queue, as on
every other path. Any ASGI server works: one whose ``send`` is a coroutine
is run up to its first wait by :meth:`~ResponseOutlet.write`, and the pump
finishes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from candlewire.api.outlet import COUNT_EVERY

__all__ = ["ResponseOutlet"]

Event = MutableMapping[str, Any]


async def _finish(steps: Iterator[Any], waiting: Any) -> None:
    """Run an awaitable's iterator to its end from where it yielded ``waiting``."""
    while True:
        if waiting is None:
            await asyncio.sleep(0)  # a bare yield: the next step, next time round
        else:
            # A future (asyncio's, or the server's future-like), yielded as
            # to a task: what a task does with it, it is done here.
            if getattr(waiting, "_asyncio_future_blocking", False):
                waiting._asyncio_future_blocking = False
            await waiting
        try:
            waiting = next(steps)
        except StopIteration:
            return


class ResponseOutlet:
    """Writes a streamed response's data frames: ``send`` is the ASGI send,
    ``encode(message, form)`` a message's frame."""

    __slots__ = ("_encode", "_error", "_form", "_pending", "_send", "_unsaid", "ready", "tally")

    def __init__(
        self,
        send: Callable[[Event], Awaitable[None]],
        encode: Callable[[bytes, Any], bytes],
        form: Any,
    ) -> None:
        self._send = send
        self._encode = encode
        self._form = form
        self._pending: tuple[Iterator[Any], Any] | None = None
        self._error: Exception | None = None
        self._unsaid = 0
        self.ready = False
        """Whether :meth:`write` may be called: set by the pump once it has
        written (the response has started), cleared by a write that did not
        finish and by :meth:`detach`."""
        self.tally: Callable[[int], None] | None = None

    def frame(self, message: bytes) -> bytes:
        """``message`` as this response frames it."""
        return self._encode(message, self._form)

    def write(self, message: bytes) -> None:
        """Write ``message`` now; what the transport did not take at once is
        finished by the next :meth:`send` (and the outlet is not ready till then)."""
        try:
            sent = self._send(
                {
                    "type": "http.response.body",
                    "body": self._encode(message, self._form),
                    "more_body": True,
                }
            )
            steps = sent.__await__()
            waiting = next(steps)
        except StopIteration:
            waiting = steps = None  # written
        except Exception as error:  # the pump's next send raises it
            self._error = error
            self.ready = False
            return
        if steps is not None:
            self._pending = (steps, waiting)
            self.ready = False
        self._unsaid += 1
        if self._unsaid == COUNT_EVERY and self.tally is not None:
            self.tally(COUNT_EVERY)
            self._unsaid = 0

    async def send(self, event: Event) -> None:
        """The ASGI send, after everything written before it."""
        if self._pending is not None or self._error is not None:
            await self.flush()
        await self._send(event)

    async def flush(self) -> None:
        """Wait for what :meth:`write` left unfinished; raise what it met."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await _finish(*pending)
        error, self._error = self._error, None
        if error is not None:
            raise error

    def detach(self) -> None:
        """No more writes: the stream has ended (its count is settled)."""
        self.ready = False
        if self._unsaid and self.tally is not None:
            self.tally(self._unsaid)
        self._unsaid = 0
