"""Writing a stream's live updates without waking the stream's task.

A stream handler yields its messages, and the face (grpc.aio, or the HTTP
port's pump) writes each one from the stream's own task: a live update
reaching a thousand streams wakes a thousand tasks, and each passes through
every frame between the hub and the transport.

A face whose transport takes a message at once, without waiting (the HTTP
port's in-process streams: Granian's ``send`` queues the bytes and returns
a finished awaitable), gives the call's context an :class:`Outlet`. While
the handler's live phase waits with nothing pending, the hub hands each
update to it directly (a :class:`~candlewire.hub.Sink`): the same
``message_for`` makes the same response message (resume token included),
and the outlet writes it in the publisher's loop. When the outlet cannot
take a message at once (the client does not read, or the stream's task is
writing), the update is queued and the stream goes on as before, through
the bounded queue and its slow-consumer policy. There is one handler core;
only how its live messages travel differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["COUNT_EVERY", "Outlet", "outlet_of"]

COUNT_EVERY = 32
"""A stream's sent messages reach the metrics every this many (and at its
end): the counter takes a lock. The call policy counts what the stream
yields, the outlet what it writes."""


class Outlet(Protocol):
    """A stream response that can be written from outside the stream's task."""

    @property
    def ready(self) -> bool:
        """Whether :meth:`write` may be called now: the response has started
        and nothing written before is still waiting for the transport."""
        ...

    def write(self, message: bytes) -> None:
        """Write one response message now, after everything written before it."""
        ...

    tally: Callable[[int], None] | None
    """Counts the messages written (the call policy's metric), in batches."""


def outlet_of(context: Any) -> Outlet | None:
    """The call's outlet, when its face has one (grpc.aio's contexts do not)."""
    outlet: Outlet | None = getattr(context, "outlet", None)
    return outlet
