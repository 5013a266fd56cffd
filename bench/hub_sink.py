"""The Python cost of delivering one live update to one in-process HTTP stream.

``python bench/hub_sink.py [--streams 1000] [--updates 300]``

Parks ``--streams`` streams on one series, each with the real live phase
(``_LivePhase``: position, resume token, the shared message) and the real
response outlet (``ResponseOutlet`` with the shared ``FrameCache``) over a
``send`` that returns a finished awaitable, as Granian's does when the
connection takes the bytes. It then publishes ``--updates`` updates through
the real ``Hub`` two ways, in the same run:

- **sink** (what the HTTP port does): the hub hands each update to the
  waiting stream's sink, which makes the message and writes it;
- **woken** (the baseline): the hub queues the update and wakes the
  stream's task, which pops it, makes the message and sends it through the
  outlet. This is the cheapest task-per-stream loop, without the handler's,
  the call policy's and the pump's generator layers that the real path had.

Printed: microseconds of CPU per delivery each way, and the ratio. No
socket is written: Granian's own cost per message is outside this figure
(``bench/http_face.py`` measures the whole).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Generator
from typing import Any

from candlewire.api.servicer import _LivePhase, _Stream
from candlewire.domain import Interval, SeriesKey
from candlewire.gateway._outlet import ResponseOutlet
from candlewire.gateway._wire import FrameCache, wire_format
from candlewire.hub import Hub
from candlewire.store.base import Update

SERIES = SeriesKey("BTCUSDT", Interval.M1)
FRAME = bytes(70)  # about a forming candle's encoded field


class _Finished:
    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())


_FINISHED = _Finished()


def _send(event: Any) -> _Finished:
    return _FINISHED


def _stream(messages: dict[Any, bytes]) -> _LivePhase:
    stream = _Stream([SERIES], [SERIES.symbol], 0, None, False, 7, b"epoch", None, None)
    return _LivePhase(stream, {SERIES.symbol: 0}, messages)


async def _sink(streams: int, updates: int) -> float:
    hub: Hub[Update] = Hub(max_subscriptions=streams + 1)
    frames, wire = FrameCache(), wire_format("application/grpc-web+proto", "")
    messages: dict[Any, bytes] = {}
    waits = []
    for _ in range(streams):
        subscription = hub.subscribe([SERIES])
        outlet = ResponseOutlet(_send, frames.frame, wire)
        outlet.ready = True
        sink = _stream(messages).sink(subscription, outlet, 300.0)
        waits.append(asyncio.ensure_future(subscription.next(300.0, sink)))
    await asyncio.sleep(0)  # every stream waits
    started = time.process_time()
    for seq in range(1, updates + 1):
        hub.publish([Update(seq, SERIES, 0, seq, False, FRAME)])
    elapsed = time.process_time() - started
    assert hub.sunk == streams * updates, hub.sunk
    for wait in waits:
        wait.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
    return elapsed / (streams * updates) * 1e6


async def _woken(streams: int, updates: int) -> float:
    hub: Hub[Update] = Hub(max_subscriptions=streams + 1)
    frames, wire = FrameCache(), wire_format("application/grpc-web+proto", "")
    messages: dict[Any, bytes] = {}
    loop = asyncio.get_running_loop()
    state = {"left": streams, "done": loop.create_future()}

    async def run() -> None:
        subscription = hub.subscribe([SERIES])
        message_for = _stream(messages).message
        outlet = ResponseOutlet(_send, frames.frame, wire)
        send = outlet.send
        while True:
            update = subscription.pop() or await subscription.next(300.0)
            if update is not None and (sent := message_for(update)) is not None:
                await send(
                    {"type": "http.response.body", "body": outlet.frame(sent), "more_body": True}
                )
                state["left"] -= 1
                if not state["left"]:
                    state["done"].set_result(None)

    tasks = [asyncio.ensure_future(run()) for _ in range(streams)]
    await asyncio.sleep(0)
    started = time.process_time()
    for seq in range(1, updates + 1):
        state["left"], state["done"] = streams, loop.create_future()
        hub.publish([Update(seq, SERIES, 0, seq, False, FRAME)])
        await state["done"]
    elapsed = time.process_time() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed / (streams * updates) * 1e6


async def _main(streams: int, updates: int, rounds: int) -> None:
    sink, woken = [], []
    for _ in range(rounds):  # alternated, best of each
        woken.append(await _woken(streams, updates))
        sink.append(await _sink(streams, updates))
    best_sink, best_woken = min(sink), min(woken)
    print(f"{streams} streams, {updates} updates, best of {rounds} rounds each")
    print(f"  sink  (written by the publisher): {best_sink:6.2f} us of CPU per delivery")
    print(f"  woken (a task per stream):        {best_woken:6.2f} us of CPU per delivery")
    print(f"  sink / woken: {best_sink / best_woken:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_main(args.streams, args.updates, args.rounds))


if __name__ == "__main__":
    main()
