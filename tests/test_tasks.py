"""Stopping tasks that lose a cancellation (Python 3.11's ``asyncio.wait_for``
can: redis-py uses it for every socket write)."""

from __future__ import annotations

import asyncio

import pytest

from candlewire import tasks
from candlewire.tasks import cancel_and_wait, checkpoint

WAIT = 10.0


@pytest.fixture(autouse=True)
def quick_recancel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "RECANCEL_EVERY", 0.01)


async def stubborn(waiting: asyncio.Event, lost: list[int], lost_one: asyncio.Event) -> None:
    """Loses its first cancellation, then waits for ever."""
    try:
        waiting.set()
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        lost.append(1)
        lost_one.set()
    await asyncio.Event().wait()


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    waiting, lost = asyncio.Event(), list[int]()
    task = asyncio.create_task(stubborn(waiting, lost, asyncio.Event()))
    await waiting.wait()
    async with asyncio.timeout(WAIT):
        await cancel_and_wait(task)
    assert task.cancelled()
    assert lost == [1]


async def test_the_callers_cancellation_waits_for_the_tasks_then_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stopper would wait a minute before cancelling again on its own:
    # its own cancellation makes it go round at once.
    monkeypatch.setattr(tasks, "RECANCEL_EVERY", 60.0)
    waiting, lost, lost_one = asyncio.Event(), list[int](), asyncio.Event()
    task = asyncio.create_task(stubborn(waiting, lost, lost_one))
    await waiting.wait()
    stopper = asyncio.create_task(cancel_and_wait(task))
    await lost_one.wait()  # the stopper cancelled it once and waits
    stopper.cancel()
    async with asyncio.timeout(WAIT):
        with pytest.raises(asyncio.CancelledError):
            await stopper
    # Nothing was left running behind the cancelled caller.
    assert task.cancelled()
    assert lost == [1]


async def test_an_error_a_task_ended_with_is_raised() -> None:
    started = asyncio.Event()

    async def fails_on_cancel() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("cleanup failed") from None

    task = asyncio.create_task(fails_on_cancel())
    quiet = asyncio.create_task(asyncio.Event().wait())
    await started.wait()
    with pytest.raises(ValueError, match="cleanup failed"):
        await cancel_and_wait(task, quiet)
    assert quiet.cancelled()


async def test_done_tasks_are_left_as_they_are() -> None:
    task = asyncio.create_task(asyncio.sleep(0, "result"))
    await task
    await cancel_and_wait(task)
    assert task.result() == "result"


async def test_a_checkpoint_raises_only_after_a_lost_cancellation() -> None:
    checked: list[str] = []

    async def loop(waiting: asyncio.Event) -> None:
        checkpoint()  # nothing pending: goes on
        checked.append("first")
        try:
            waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # lost, as wait_for can lose it
        checked.append("lost")
        checkpoint()
        checked.append("never")

    waiting = asyncio.Event()
    task = asyncio.create_task(loop(waiting))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert checked == ["first", "lost"]
