"""Rate limits per key and per client address, in one process and across replicas via Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from candlewire.app import App
from candlewire.obs import render
from tests.scripted import ScriptedFeed, running, sec
from tests.security.conftest import Keys, call, grpc_web_frame, request_for, retry_delay
from tests.store.conftest import RedisServer

LIST = "/marketdata.v1.MarketDataService/ListSymbols"
SUBSCRIBE = "/marketdata.v1.MarketDataService/SubscribeCandles"


@contextlib.asynccontextmanager
async def _open_stream(channel: grpc.aio.Channel, key: str) -> AsyncIterator[None]:
    stream = channel.unary_stream(SUBSCRIBE)(
        request_for(SUBSCRIBE), metadata=(("x-api-key", key),), timeout=30
    )
    await stream.read()  # the first message: the stream holds its slot
    try:
        yield
    finally:
        stream.cancel()


async def _until_released(channel: grpc.aio.Channel, key: str) -> grpc.StatusCode:
    """A stream's slot is given back when the server has ended it: try until then."""
    for _ in range(100):
        code, _ = await call(channel, SUBSCRIBE, [("x-api-key", key)])
        if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            return code
        await asyncio.sleep(0.05)
    return grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_key_over_its_rate_is_refused_with_a_retry_delay_then_recovers(
    keys: Keys,
) -> None:
    async with (
        running(ScriptedFeed(), api_keys_file=str(keys.path)) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        slow = [("x-api-key", keys.slow)]  # 2 requests/s, a burst of 2
        assert (await call(channel, LIST, slow))[0] == grpc.StatusCode.OK
        assert (await call(channel, LIST, slow))[0] == grpc.StatusCode.OK
        code, status = await call(channel, LIST, slow)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        delay = retry_delay(status)
        assert delay is not None and 0 < delay <= 0.5
        # Another key is not affected.
        assert (await call(channel, LIST, [("x-api-key", keys.reader)]))[0] == grpc.StatusCode.OK
        await asyncio.sleep(delay)  # the delay the server asked for
        assert (await call(channel, LIST, slow))[0] == grpc.StatusCode.OK


async def test_concurrent_streams_per_key(keys: Keys) -> None:
    feed = ScriptedFeed()
    async with (
        running(feed, api_keys_file=str(keys.path)) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await feed.trade("BTCUSDT", sec(5), "100")
        async with _open_stream(channel, keys.one_stream):
            code, status = await call(channel, SUBSCRIBE, [("x-api-key", keys.one_stream)])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert retry_delay(status) is not None
            code, _ = await call(channel, SUBSCRIBE, [("x-api-key", keys.reader)])
            assert code == grpc.StatusCode.OK
        assert await _until_released(channel, keys.one_stream) == grpc.StatusCode.OK


async def test_client_addresses_come_from_trusted_forwarded_for_only(keys: Keys) -> None:
    async with (
        running(ScriptedFeed(), api_keys_file=str(keys.path), ip_rate=1) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        # Loopback is a trusted proxy by default: its x-forwarded-for names the client.
        first = [("x-api-key", keys.reader), ("x-forwarded-for", "203.0.113.7")]
        assert (await call(channel, LIST, first))[0] == grpc.StatusCode.OK
        assert (await call(channel, LIST, first))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        other = [("x-api-key", keys.reader), ("x-forwarded-for", "203.0.113.8")]
        assert (await call(channel, LIST, other))[0] == grpc.StatusCode.OK

    # Through the gateway, whose peer (the browser) is not a trusted proxy:
    # what the browser wrote in x-forwarded-for does not choose its address.
    async with running(
        ScriptedFeed(), api_keys_file=str(keys.path), ip_rate=1, trusted_proxies="127.0.0.1/32"
    ) as app:
        assert app.gateway is not None
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        base = f"http://127.0.0.1:{app.gateway.port}"
        body = grpc_web_frame(request_for(LIST))
        async with httpx.AsyncClient(base_url=base, transport=transport, timeout=10) as http:
            statuses = []
            for spoofed in ("198.51.100.1", "198.51.100.2"):
                response = await http.post(
                    LIST,
                    content=body,
                    headers={
                        "content-type": "application/grpc-web+proto",
                        "x-api-key": keys.reader,
                        "x-forwarded-for": spoofed,
                    },
                )
                statuses.append(response.headers.get("grpc-status", "0"))
        assert statuses == ["0", str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])]


async def test_limits_are_shared_by_replicas_through_redis(
    keys: Keys, redis_server: RedisServer
) -> None:
    settings = {
        "api_keys_file": str(keys.path),
        "redis_url": redis_server.url,
        "heartbeat_interval": 30,
    }
    async with (
        running(ScriptedFeed(), **settings) as one,
        running(ScriptedFeed(), **settings) as two,
        grpc.aio.insecure_channel(f"127.0.0.1:{one.port}") as a,
        grpc.aio.insecure_channel(f"127.0.0.1:{two.port}") as b,
    ):
        slow = [("x-api-key", keys.slow)]  # 2 requests/s, a burst of 2, over both
        assert (await call(a, LIST, slow))[0] == grpc.StatusCode.OK
        assert (await call(b, LIST, slow))[0] == grpc.StatusCode.OK
        code, status = await call(b, LIST, slow)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        code, status = await call(a, LIST, slow)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        delay = retry_delay(status)
        assert delay is not None and delay > 0
        await asyncio.sleep(delay)
        assert (await call(b, LIST, slow))[0] == grpc.StatusCode.OK

        await _wait_serving(one)
        async with _open_stream(a, keys.one_stream):
            code, _ = await call(b, SUBSCRIBE, [("x-api-key", keys.one_stream)])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _until_released(b, keys.one_stream) == grpc.StatusCode.OK
        assert one.limiter is not None and one.limiter.errors == 0
        # The Redis store's operations are timed into the metrics.
        families = text_string_to_metric_families(render(one.metrics).decode())
        timed = {
            (s.labels["store"], s.labels["operation"])
            for f in families
            for s in f.samples
            if s.name == "candlewire_store_operation_seconds_count" and s.value > 0
        }
        assert ("redis", "write_candles") in timed or ("redis", "snapshot") in timed, timed


async def _wait_serving(app: App) -> None:
    for _ in range(200):
        if app.ready:
            return
        await asyncio.sleep(0.05)
