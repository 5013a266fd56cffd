"""The response outlet: writes from outside the stream's task, kept in order.

Granian's ``send`` (the server the HTTP port runs) is exercised by the
in-process tests; here ``send`` is each kind an ASGI server may hand over:
one whose awaitable is finished when returned, a future that finishes
later, and a coroutine that waits part-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, MutableMapping
from typing import Any

import pytest

from candlewire.gateway._outlet import ResponseOutlet


def body(frame: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": frame, "more_body": True}


def framed(message: bytes, form: str) -> bytes:
    return form.encode() + message


class Finished:
    """What Granian's send returns when the connection took the bytes."""

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())


async def test_a_finished_send_leaves_the_outlet_ready_and_counts_in_batches() -> None:
    sent: list[MutableMapping[str, Any]] = []
    counted: list[int] = []

    def send(event: MutableMapping[str, Any]) -> Finished:
        sent.append(event)
        return Finished()

    outlet = ResponseOutlet(send, framed, "w:")
    outlet.tally = counted.append
    outlet.ready = True
    for n in range(70):
        outlet.write(b"%d" % n)
        assert outlet.ready
    assert [e["body"] for e in sent] == [b"w:%d" % n for n in range(70)]
    assert all(e["more_body"] for e in sent)
    assert counted == [32, 32]
    outlet.detach()
    assert counted == [32, 32, 6] and not outlet.ready


async def test_a_write_the_transport_could_not_take_holds_back_the_next_send() -> None:
    loop = asyncio.get_running_loop()
    taken: list[bytes] = []
    room = loop.create_future()

    def send(event: MutableMapping[str, Any]) -> Any:
        taken.append(event["body"])
        if event["body"] == b"w:full":
            return room  # a future: the bytes go out when it is done
        return Finished()

    outlet = ResponseOutlet(send, framed, "w:")
    outlet.ready = True
    outlet.write(b"full")
    assert not outlet.ready  # the hub queues what follows
    later = asyncio.ensure_future(outlet.send(body(b"w:next")))
    await asyncio.sleep(0)
    assert not later.done() and taken == [b"w:full"]  # waits for the write before it
    room.set_result(None)
    await later
    assert taken == [b"w:full", b"w:next"]


async def test_a_coroutine_send_is_run_to_its_wait_and_finished_by_the_next_send() -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def send(event: MutableMapping[str, Any]) -> None:
        order.append("start " + event["body"].decode())
        if event["body"] == b"w:slow":
            await gate.wait()
        order.append("end " + event["body"].decode())

    outlet = ResponseOutlet(send, framed, "w:")
    outlet.ready = True
    outlet.write(b"quick")  # runs to its end at once
    assert outlet.ready and order == ["start w:quick", "end w:quick"]
    outlet.write(b"slow")
    assert not outlet.ready and order[-1] == "start w:slow"
    later = asyncio.ensure_future(outlet.send(body(b"w:next")))
    await asyncio.sleep(0)
    assert not later.done()
    gate.set()
    await later
    assert order[2:] == ["start w:slow", "end w:slow", "start w:next", "end w:next"]


async def test_a_failed_write_is_raised_by_the_next_send() -> None:
    def send(event: MutableMapping[str, Any]) -> Finished:
        if event["body"] == b"w:bad":
            raise ConnectionResetError("client gone")
        return Finished()

    outlet = ResponseOutlet(send, framed, "w:")
    outlet.ready = True
    outlet.write(b"bad")  # the publisher does not see it
    assert not outlet.ready
    with pytest.raises(ConnectionResetError, match="client gone"):
        await outlet.send(body(b"w:next"))
    await outlet.send(body(b"w:after"))  # reported once
