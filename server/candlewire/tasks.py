"""Stopping background tasks reliably.

On Python 3.11, :func:`asyncio.wait_for` loses a cancellation that arrives
in the same loop iteration as the completion of the call it wraps: it
returns the call's result, and the task goes on with ``cancelling()`` still
counting the request (fixed in 3.12). redis-py wraps every socket write in
``wait_for`` when a socket timeout is set, so a task cancelled while it
sends a Redis command can miss its cancellation and, in a loop, run forever.
Shutdown then hangs on it.

Two remedies, used together: loops that talk to Redis call
:func:`checkpoint`, which turns a lost cancellation back into
``CancelledError``; and whoever stops a task uses :func:`cancel_and_wait`,
which cancels it again until it is done.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["RECANCEL_EVERY", "cancel_and_wait", "checkpoint"]

RECANCEL_EVERY = 0.5
"""Seconds :func:`cancel_and_wait` waits before cancelling a task again."""


def checkpoint() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop and
    something swallowed the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until every one is done, cancelling again
    every :data:`RECANCEL_EVERY` seconds a task that lost its cancellation.

    The caller's own cancellation is held back until the tasks are done
    (so none is left running behind it), then raised. An exception a task
    ended with (other than its cancellation) is raised afterwards, the first
    in argument order; a caller that expects one suppresses it.
    """
    pending = {task for task in tasks if not task.done()}
    interrupted = False
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
    errors = [t.exception() for t in tasks if not t.cancelled()]
    for error in errors:
        if error is not None:
            raise error
