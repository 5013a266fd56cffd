"""The service under test: a real :class:`~candlewire.app.App` in this process.

    python bench/serve.py --feed sim --symbols 20            # unary benchmarks
    python bench/serve.py --feed inject --inject 1 --rate 10  # fan-out benchmarks

``sim`` is the built-in simulated feed (history backfilled at start-up).
``inject`` is a benchmark feed: ``--rate`` trades per second on each of the
first ``--inject`` symbols, on a fixed schedule, through the real ingest
pipeline (aggregation of every interval, store, hub). Each trade's price
carries its injection time (see ``_common.encode_price``), so a client can
tell how long the resulting candle update took to reach it. ``--rate 0``
injects nothing (idle streams).

With ``inject``, the time each tick's updates enter the hub (``Hub.publish``)
is noted per tick, beside the service rather than in it: the hub object's
``publish`` is wrapped here, and the wrapper only appends a pair to a list
before calling it. A ``HUB <file>`` line on stdin writes them to ``<file>``
(JSON: injection time as carried in the price, nanoseconds from injection to
hub entry) and prints ``HUBDONE``; the fan-out benchmark subtracts them from
the client's end-to-end latencies to get the latency from hub entry.

Prints ``PORT <n>`` once gRPC listens; runs until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LOOPS, SYMBOLS, encode_price, injection_key, run_on_loop, ticks

from candlewire.app import App
from candlewire.config import load
from candlewire.domain import Instrument, Source, Trade
from candlewire.feeds.base import FeedSink
from candlewire.store.base import Update

_ONE = Decimal(1)


class InjectFeed:
    """Trades at a fixed rate whose prices carry their injection time."""

    def __init__(self, symbols: Sequence[str], inject: Sequence[str], rate: float) -> None:
        self.symbols = tuple(symbols)
        self.inject = tuple(inject)
        self.rate = rate
        self.injected = 0
        self.tick = 0
        """Injection time of the tick being ingested (nanoseconds)."""

    async def instruments(self) -> Mapping[str, Instrument]:
        return {s: Instrument(s, s[:3], s[3:], 4, 4, Source.LIVE) for s in self.symbols}

    async def backfill(self, sink: FeedSink) -> None:
        return None

    async def run(self, sink: FeedSink) -> None:
        if self.rate <= 0 or not self.inject:
            while True:  # idle: keep readiness fresh with watermarks only
                for symbol in self.symbols:
                    await sink.watermark(symbol, time.time_ns())
                await asyncio.sleep(1.0)
        async for _ in ticks(self.rate):
            now = self.tick = time.time_ns()
            price = encode_price(now)
            await sink.trades([Trade(s, now, price, _ONE, Source.LIVE) for s in self.inject])
            self.injected += len(self.inject)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feed", choices=("sim", "inject"), default="sim")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--inject", type=int, default=1, help="symbols that get trades")
    parser.add_argument("--rate", type=float, default=10.0, help="trades/s per injected symbol")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--history", type=int, default=1440, help="sim history minutes")
    parser.add_argument(
        "--http-port", type=int, default=-1, help="serve the HTTP port too (0: any free port)"
    )
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="event loop")
    parser.add_argument("--keys-file", default="", help="API keys file: authentication on")
    parser.add_argument("--ip-rate", type=float, default=0.0, help="requests/s per address")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="no call policy at all: no authentication, limits nor RPC metrics",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    symbols = SYMBOLS[: args.symbols]
    settings = load(
        grpc_listen=f"127.0.0.1:{args.port}",
        # gRPC only unless asked (and no fixed port shared by servers of one run)
        http_listen="" if args.http_port < 0 else f"127.0.0.1:{args.http_port}",
        symbols=symbols,
        sim_history=args.history,
        log_level="WARNING",
        shutdown_grace=0.5,
        api_keys_file=args.keys_file,
        ip_rate=args.ip_rate,
        key_rate=1e9,  # limits are checked on every call, never refused
    )
    feed = InjectFeed(symbols, symbols[: args.inject], args.rate) if args.feed == "inject" else None
    app = App(settings, feed=feed)
    if args.bare:
        app._new_gatekeeper = lambda: None  # type: ignore[assignment,method-assign,return-value]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hub_entries: list[tuple[int, int]] = []
    if isinstance(feed, InjectFeed):
        inject = feed
        publish = app.hub.publish

        def noted_publish(updates: Sequence[Update]) -> None:
            hub_entries.append((inject.tick, time.time_ns()))
            publish(updates)

        app.hub.publish = noted_publish  # type: ignore[method-assign]

    def watch_stdin() -> None:
        for line in sys.stdin:  # ends when the parent closes stdin (or dies)
            if line.startswith("HUB "):
                first: dict[int, int] = {}
                for tick, entered in hub_entries:
                    first.setdefault(injection_key(tick), entered - tick)
                Path(line[4:].strip()).write_text(json.dumps(list(first.items())))
                print("HUBDONE", flush=True)
        loop.call_soon_threadsafe(stop.set)

    async with app:
        print(f"PORT {app.port}", flush=True)
        if app.gateway is not None:
            print(f"HTTP {app.gateway.port}", flush=True)
        threading.Thread(target=watch_stdin, daemon=True).start()
        await stop.wait()


if __name__ == "__main__":
    run_on_loop(main(), sys.argv)
