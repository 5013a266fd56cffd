"""2,000 SubscribeCandles streams opened at once over four HTTP/2 connections:
every stream is served (history, then ``snapshot_end``) or refused with a
status a client acts on, none is lost.

Raw HTTP/2 clients (``h2``) write every HEADERS and request of a connection
at once, before reading anything, against ``candlewire serve`` in a child
process. gRPC core holds the calls grpc.aio has not taken yet in one queue
for all connections; beyond ``grpc.server.max_pending_requests`` it cancels
some at random, before the service sees them (see
``candlewire.api.server.server_options``). ``bench/stream_burst.py`` runs
the same in rounds and prints the figures.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.rawh2 import RawGrpc, RawStream
from tests.test_smoke import LISTENING, clean_env, serve, wait_ready

pytestmark = pytest.mark.stress

CONNECTIONS = 4
STREAMS = 500  # per connection: below the server's 1,000 concurrent streams per connection
WAIT = 60.0
PATH = "/marketdata.v1.MarketDataService/SubscribeCandles"
REQUEST = pb.SubscribeCandlesRequest(
    series=[pb.Series(symbol=s, interval=pb.INTERVAL_1M) for s in ("BTCUSDT", "ETHUSDT", "EURUSD")],
    history=10,
    closed_only=True,
).SerializeToString()
# What a client retries (after the delay given): a refusal, not a loss.
REFUSALS = {
    str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]),
    str(grpc.StatusCode.UNAVAILABLE.value[0]),
}


def served(stream: RawStream) -> bool:
    return any(
        pb.SubscribeCandlesResponse.FromString(m).HasField("snapshot_end") for m in stream.messages
    )


def outcome(stream: RawStream) -> str:
    if served(stream):
        return "served"
    if stream.status is not None:
        block = stream.trailers or stream.headers or {}
        return f"grpc-status {stream.status} {block.get('grpc-message', '')}"
    if stream.reset is not None:
        return f"reset {stream.reset}"
    return "headers, then nothing" if stream.headers is not None else "nothing"


async def test_every_stream_of_a_burst_is_served_or_refused() -> None:
    env = clean_env(
        CANDLEWIRE_GRPC_LISTEN="127.0.0.1:0",
        CANDLEWIRE_HTTP_LISTEN="",
        CANDLEWIRE_SIM_HISTORY="60",
    )
    async with serve(env=env) as server:
        port = int((await server.read_until(LISTENING, WAIT)).group(2))
        server.drain()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_ready(channel, WAIT)
        clients = [RawGrpc("127.0.0.1", port) for _ in range(CONNECTIONS)]
        for client in clients:
            await client.__aenter__()
        try:
            streams = [c.open(PATH, REQUEST) for c in clients for _ in range(STREAMS)]
            await asyncio.gather(*(c.flush() for c in clients))

            def settled(stream: RawStream) -> bool:
                return stream.ended or served(stream)

            for client in clients:
                mine = list(client.streams.values())
                await client.until(lambda mine=mine: all(settled(s) for s in mine), WAIT)
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)
    outcomes = [outcome(s) for s in streams]
    lost = [s for s in streams if not served(s) and s.status not in REFUSALS]
    counts = {o: outcomes.count(o) for o in set(outcomes)}
    assert not lost, counts
    assert outcomes.count("served") > 0, counts
