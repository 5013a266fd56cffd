"""Fan-out client over the HTTP port: N grpc-web SubscribeCandles streams in one process.

    python bench/fanout_web_client.py --port HTTP_PORT --n 1000 --warmup 2

The browser's way in: each stream is a ``POST`` of one grpc-web request
(``application/grpc-web+proto``) on its own HTTP/1.1 connection, as a page
on HTTP/1.1 holds one (and as the WebSocket peer holds one socket per
subscriber), answered with a chunked body of grpc-web frames. The protocol
on stdin/stdout and the figures are those of ``fanout_client.py`` (READY,
``MEASURE <seconds> <samples file>``, one JSON line per window), so
``fanout.py``'s harness drives both.

The client is a bare ``asyncio.Protocol`` (status line, headers, chunked
framing, grpc-web frames) so that 10,000 messages a second cost this
process as little as possible: the server is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SYMBOLS, decode_price, run_on_loop
from fanout_client import Stats, measure

from candlewire.api.server import SERVICE_NAME
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

PATH = f"/{SERVICE_NAME}/SubscribeCandles"
_FRAME = struct.Struct(">BI")


class GrpcWebStream(asyncio.Protocol):
    """One grpc-web stream over one HTTP/1.1 connection."""

    def __init__(self, request: bytes, stats: Stats, ready: asyncio.Event, n: int) -> None:
        self.request = request
        self.stats = stats
        self.all_ready = ready
        self.n = n
        self.buffer = bytearray()
        self.headers_done = False
        self.chunk_left = 0  # bytes of the current chunk still to come
        self.chunk_crlf = False  # the CRLF after a chunk's data is next
        self.body = bytearray()  # grpc-web bytes not yet parsed into frames
        self.snapshot_seen = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        body = _FRAME.pack(0, len(self.request)) + self.request
        head = (
            f"POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        transport.write(head + body)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.headers_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1").lower()
            if not head.startswith("http/1.1 200") or "chunked" not in head:
                self.stats.errors.append(f"response {head[:200]!r}")
            del buffer[: end + 4]
            self.headers_done = True
        # chunked framing
        position = 0
        size = len(buffer)
        while position < size:
            if self.chunk_crlf:
                if size - position < 2:
                    break
                position += 2
                self.chunk_crlf = False
                continue
            if self.chunk_left == 0:
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    break
                self.chunk_left = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
                position = line_end + 2
                if self.chunk_left == 0:
                    self.stats.errors.append("stream ended")
                    return
                continue
            take = min(self.chunk_left, size - position)
            self.body += buffer[position : position + take]
            position += take
            self.chunk_left -= take
            if self.chunk_left == 0:
                self.chunk_crlf = True
        del buffer[:position]
        self._frames()

    def _frames(self) -> None:
        body = self.body
        stats = self.stats
        position = 0
        while len(body) - position >= 5:
            flags, length = _FRAME.unpack_from(body, position)
            if len(body) - position - 5 < length:
                break
            payload = bytes(body[position + 5 : position + 5 + length])
            position += 5 + length
            if flags & 0x80:
                stats.errors.append(f"trailers {payload[:200]!r}")
                continue
            now = time.time_ns()
            if not self.snapshot_seen:
                message = pb.SubscribeCandlesResponse.FromString(payload)
                if message.WhichOneof("event") == "snapshot_end":
                    self.snapshot_seen = True
                    stats.ready += 1
                    if stats.ready == self.n:
                        self.all_ready.set()
                continue
            if stats.measuring:
                stats.messages += 1
                message = pb.SubscribeCandlesResponse.FromString(payload)
                if message.WhichOneof("event") == "candle" and not message.candle.closed:
                    sent_us, latency = decode_price(message.candle.close, now)
                    stats.sent.append(sent_us)
                    stats.latencies.append(latency)
        del body[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    stats = Stats()
    all_ready = asyncio.Event()
    request = pb.SubscribeCandlesRequest(
        series=[pb.Series(symbol=SYMBOLS[0], interval=pb.INTERVAL_1M)]
    ).SerializeToString()
    started = time.monotonic()
    transports: list[asyncio.BaseTransport] = []
    for start in range(0, args.n, 100):  # connect in batches (the listen backlog)
        made = await asyncio.gather(
            *(
                loop.create_connection(
                    lambda: GrpcWebStream(request, stats, all_ready, args.n), "127.0.0.1", args.port
                )
                for _ in range(start, min(args.n, start + 100))
            )
        )
        transports += [transport for transport, _ in made]
    try:
        await asyncio.wait_for(all_ready.wait(), 60)
    except TimeoutError:
        print(json.dumps({"error": f"{stats.ready}/{args.n} ready", "errors": stats.errors[:5]}))
        return
    connect_seconds = time.monotonic() - started
    print("READY", flush=True)
    await asyncio.sleep(args.warmup)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.split()
        if not command or command[0] != "MEASURE":
            break
        result = await measure(stats, float(command[1]), command[2])
        print(
            json.dumps({"n": args.n, "mode": "same", "connect_s": connect_seconds} | result),
            flush=True,
        )
    for transport in transports:
        transport.close()


if __name__ == "__main__":
    run_on_loop(main(), sys.argv)
