"""/metrics: the Prometheus text format, moving with calls, with bounded labels."""

from __future__ import annotations

import asyncio

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.scripted import ScriptedFeed, running, sec
from tests.security.conftest import Keys, call

GET_PRICE = "/marketdata.v1.MarketDataService/GetPrice"
SUBSCRIBE = "/marketdata.v1.MarketDataService/SubscribeCandles"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
LABELS = {"method", "code", "reason", "symbol", "cache", "result", "le", "store", "operation"}
LABELS |= {"dependency"}


def _samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_calls_and_never_name_keys_or_addresses(keys: Keys) -> None:
    feed = ScriptedFeed()
    async with (
        running(feed, api_keys_file=str(keys.path), metrics_listen="127.0.0.1:0") as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await feed.trade("BTCUSDT", sec(5), "100")
        await feed.quote("BTCUSDT", sec(5), "99", "101")
        assert app.gateway is not None
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"http://127.0.0.1:{app.gateway.port}/metrics"
            before = _samples((await http.get(url)).text)
            ok = [("x-api-key", keys.reader), ("x-forwarded-for", "203.0.113.9")]
            for _ in range(3):
                assert (await call(channel, GET_PRICE, ok))[0] == grpc.StatusCode.OK
            assert (await call(channel, GET_PRICE))[0] == grpc.StatusCode.UNAUTHENTICATED
            assert (await call(channel, SUBSCRIBE, ok))[0] == grpc.StatusCode.OK
            # The stream's messages are counted when it ends on the server
            # (after the client's cancel arrives): look until they are.
            async with asyncio.timeout(10):
                while True:
                    response = await http.get(url)
                    after = _samples(response.text)
                    key = ("candlewire_stream_messages_sent_total", (("method", SUBSCRIBE),))
                    if after.get(key, 0.0) > before.get(key, 0.0):
                        break
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            own_port = _samples(
                (await http.get(f"http://127.0.0.1:{app.metrics_port}/metrics")).text
            )

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("candlewire_rpc_handled_total", method=GET_PRICE, code="OK") == 3
    assert moved("candlewire_rpc_handled_total", method=GET_PRICE, code="UNAUTHENTICATED") == 1
    assert moved("candlewire_rpc_duration_seconds_count", method=GET_PRICE, code="OK") == 3
    assert moved("candlewire_rejected_requests_total", reason="unauthenticated") == 1
    assert moved("candlewire_stream_messages_sent_total", method=SUBSCRIBE) >= 1
    assert _value(after, "candlewire_candles_written_total") > 0
    assert _value(after, "candlewire_feed_lag_seconds", symbol="BTCUSDT") > 0
    for name in (
        "candlewire_stream_updates_written_directly_total",
        "candlewire_slow_consumer_terminations_total",
        "candlewire_stream_queue_depth_max",
    ):
        assert any(n == name for n, _ in after)
    # The port of its own serves the same registry.
    assert _value(own_port, "candlewire_rpc_handled_total", method=GET_PRICE, code="OK") == 3
    # Bounded labels: no key, key name or client address anywhere.
    label_values = {v for _, labels in after for _, v in labels}
    for secret in [*keys.all(), "reader", "203.0.113.9", "127.0.0.1"]:
        assert secret not in label_values
    assert {k for _, labels in after for k, _ in labels} <= LABELS
