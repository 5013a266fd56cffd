"""The Connect protocol on the HTTP port, against a real App (``candlewire serve``).

Requests are written by hand from the specification
(https://connectrpc.com/docs/protocol) with httpx, and by a real Connect
client, ``buf curl --protocol connect``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import shutil
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2

from candlewire.app import App
from candlewire.gateway._connect import (
    _JsonCodec,
    _JsonFrames,
    _schemas,
    code_name,
    http_status,
)
from candlewire.gateway._methods import DEFAULT_FILES, MethodTable
from candlewire.gateway._wire import ProtocolError
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.gateway.test_gateway import eventually
from tests.scripted import ScriptedFeed, running, sec
from tests.security.conftest import Keys

SERVICE = "/marketdata.v1.MarketDataService"
ROOT = Path(__file__).resolve().parents[2]
BUF = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf") or "buf"
BUF_CURL = (BUF, "curl", "--protocol", "connect", "--schema", str(ROOT / "protos"))
WAIT = 10.0
JSON = {"content-type": "application/json"}
PROTO = {"content-type": "application/proto"}
STREAM_JSON = {"content-type": "application/connect+json", "connect-protocol-version": "1"}
STREAM_PROTO = {"content-type": "application/connect+proto", "connect-protocol-version": "1"}


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def bad_request(error: dict[str, Any]) -> error_details_pb2.BadRequest:
    (detail,) = [d for d in error["details"] if d["type"] == "google.rpc.BadRequest"]
    assert "=" not in detail["value"], "detail values are unpadded base64"
    return error_details_pb2.BadRequest.FromString(unb64(detail["value"]))


class Envelopes:
    """A Connect streaming response read envelope by envelope as chunks arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_raw()
        self._buffer = b""

    async def next(self) -> tuple[int, bytes]:
        async with asyncio.timeout(WAIT):
            while True:
                if len(self._buffer) >= 5:
                    flags, length = struct.unpack_from(">BI", self._buffer)
                    if len(self._buffer) >= 5 + length:
                        payload = self._buffer[5 : 5 + length]
                        self._buffer = self._buffer[5 + length :]
                        return flags, payload
                self._buffer += await anext(self._chunks)

    async def message(self) -> dict[str, Any]:
        flags, payload = await self.next()
        assert flags == 0, f"expected a message, got end of stream {payload!r}"
        value: dict[str, Any] = json.loads(payload)
        return value


@pytest.fixture
async def data(app: App, feed: ScriptedFeed) -> App:
    await feed.trades([("BTCUSDT", sec(s), str(100 + s), "1") for s in (1, 30, 61, 95, 130)])
    await feed.quote("BTCUSDT", sec(130), "229.5", "230.5")
    return app


@pytest.fixture
async def http(data: App) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://127.0.0.1:{data.gateway.port}"
    async with httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        yield client


# -- unary POST --------------------------------------------------------------------------


async def test_json_post(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{SERVICE}/GetPrice", content='{"symbol":"BTCUSDT"}', headers=JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    price = response.json()["price"]
    assert price["symbol"] == "BTCUSDT"
    assert (price["bid"], price["ask"]) == (229.5, 230.5)
    assert "bidSize" in price and "bid_size" not in price  # canonical JSON: lowerCamelCase
    assert price["source"] == "SOURCE_LIVE"  # enums by name
    assert "cache-control" not in response.headers  # POST answers are not for caches


async def test_json_input_takes_both_field_names(http: httpx.AsyncClient) -> None:
    bodies = [
        {"symbol": "BTCUSDT", "interval": "INTERVAL_1M", "pageSize": 1},
        {"symbol": "BTCUSDT", "interval": 2, "page_size": 1},
    ]
    for body in bodies:
        response = await http.post(f"{SERVICE}/GetCandles", json=body)
        assert response.status_code == 200, response.text
        assert len(response.json()["candles"]) == 1


async def test_binary_post(http: httpx.AsyncClient) -> None:
    body = pb.GetPriceRequest(symbol="BTCUSDT").SerializeToString()
    headers = {**PROTO, "connect-protocol-version": "1", "connect-timeout-ms": "5000"}
    response = await http.post(f"{SERVICE}/GetPrice", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/proto"
    assert pb.GetPriceResponse.FromString(response.content).price.ask == 230.5


async def test_gzip_request(http: httpx.AsyncClient) -> None:
    body = gzip.compress(b'{"symbol":"BTCUSDT"}')
    headers = {**JSON, "content-encoding": "gzip"}
    response = await http.post(f"{SERVICE}/GetPrice", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["price"]["symbol"] == "BTCUSDT"


async def test_unsupported_compression(http: httpx.AsyncClient) -> None:
    headers = {**JSON, "content-encoding": "br"}
    response = await http.post(f"{SERVICE}/GetPrice", content=b"{}", headers=headers)
    assert response.status_code == 501
    assert response.json()["code"] == "unimplemented"
    assert response.headers["accept-encoding"] == "gzip"


@pytest.mark.parametrize(
    ("name", "value"), [("connect-protocol-version", "2"), ("connect-timeout-ms", "soon")]
)
async def test_bad_protocol_headers(http: httpx.AsyncClient, name: str, value: str) -> None:
    response = await http.post(
        f"{SERVICE}/GetPrice", content='{"symbol":"BTCUSDT"}', headers={**JSON, name: value}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"


# -- errors ------------------------------------------------------------------------------


async def test_unknown_symbol_is_not_found_with_details(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{SERVICE}/GetPrice", json={"symbol": "NOPE"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["code"] == "not_found"
    assert "NOPE" in error["message"]
    violation = bad_request(error).field_violations[0]
    assert violation.field == "symbol"
    (detail,) = error["details"]
    assert detail["debug"]["fieldViolations"][0]["field"] == "symbol"
    assert "grpc-status-details-bin" not in response.headers  # details are in the body


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{}", "symbol"),  # missing field: the handler's validation
        ('{"symbol": ', "invalid JSON"),  # not JSON
        ('{"symbol":"BTCUSDT","colour":"red"}', "colour"),  # unknown field
        ('{"symbol": 7}', "invalid JSON"),  # wrong type
        ("[]", "not a JSON object"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    http: httpx.AsyncClient, body: str, fragment: str
) -> None:
    response = await http.post(f"{SERVICE}/GetPrice", content=body, headers=JSON)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "invalid_argument"
    assert fragment in error["message"]


async def test_unknown_method(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{SERVICE}/Nope", content="{}", headers=JSON)
    assert response.status_code == 404
    assert response.json()["code"] == "unimplemented"


async def test_stream_content_type_on_a_unary_method(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{SERVICE}/GetPrice", content=envelope(b"{}"), headers=STREAM_JSON)
    assert response.status_code == 415


async def test_oversized_request(http: httpx.AsyncClient, data: App) -> None:
    limit = data.gateway.max_request_bytes
    body = json.dumps({"symbols": ["BTCUSDT"] * (limit // 10 + 1)})
    assert limit < len(body) < limit + 64 * 1024
    response = await http.post(f"{SERVICE}/BatchGetPrices", content=body, headers=JSON)
    assert response.status_code == 429
    assert response.json()["code"] == "resource_exhausted"


# -- GET ---------------------------------------------------------------------------------


async def test_get_json_with_cache_headers(http: httpx.AsyncClient) -> None:
    params = {"connect": "v1", "encoding": "json", "message": "{}"}
    response = await http.get(f"{SERVICE}/ListSymbols", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=60"
    assert "origin" in response.headers["vary"]
    symbols = [s["symbol"] for s in response.json()["symbols"]]
    assert "BTCUSDT" in symbols

    params["message"] = '{"symbol":"BTCUSDT"}'
    response = await http.get(f"{SERVICE}/GetPrice", params=params)
    assert response.headers["cache-control"] == "public, max-age=1"
    assert response.json()["price"]["symbol"] == "BTCUSDT"


async def test_get_base64_proto_and_gzip(http: httpx.AsyncClient) -> None:
    message = pb.BatchGetPricesRequest(symbols=["BTCUSDT"]).SerializeToString()
    for compression, raw in (("identity", message), ("gzip", gzip.compress(message))):
        params = {
            "encoding": "proto",
            "base64": "1",
            "compression": compression,
            "message": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        }
        response = await http.get(f"{SERVICE}/BatchGetPrices", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/proto"
        prices = pb.BatchGetPricesResponse.FromString(response.content).prices
        assert [p.symbol for p in prices] == ["BTCUSDT"]
    # Without base64=1 the message is the raw bytes, percent-encoded.
    query = "encoding=proto&message=" + quote(message, safe="")
    response = await http.get(f"{SERVICE}/BatchGetPrices?{query}")
    assert response.status_code == 200, response.text
    assert pb.BatchGetPricesResponse.FromString(response.content).prices[0].symbol == "BTCUSDT"


async def test_get_with_credentials_is_private(http: httpx.AsyncClient) -> None:
    params = {"encoding": "json", "message": "{}"}
    response = await http.get(
        f"{SERVICE}/ListSymbols", params=params, headers={"x-api-key": "anything"}
    )
    assert response.status_code == 200  # authentication is off here
    assert response.headers["cache-control"] == "private, max-age=60"


async def test_get_candles_settled_ranges_are_immutable(http: httpx.AsyncClient) -> None:
    def params(end_seconds: int | None) -> dict[str, str]:
        message: dict[str, Any] = {
            "symbol": "BTCUSDT",
            "interval": "INTERVAL_1M",
            "startTime": "2026-01-01T00:00:00Z",
        }
        if end_seconds is not None:
            message["endTime"] = f"2026-01-01T00:{end_seconds // 60:02d}:00Z"
        return {"encoding": "json", "message": json.dumps(message)}

    # Two closed candles (00:00 and 00:01), long ago: final.
    settled = await http.get(f"{SERVICE}/GetCandles", params=params(120))
    assert [c["closed"] for c in settled.json()["candles"]] == [True, True]
    assert settled.headers["cache-control"] == "public, max-age=86400, immutable"
    # Reaching the forming candle (00:02): a second at most.
    for end in (180, None):
        forming = await http.get(f"{SERVICE}/GetCandles", params=params(end))
        candles = forming.json()["candles"]
        assert len(candles) == 3 and "closed" not in candles[-1]
        assert forming.headers["cache-control"] == "public, max-age=1"


async def test_get_of_other_methods_is_not_allowed(http: httpx.AsyncClient) -> None:
    for name in ("SubscribeCandles", "GetTrades"):
        response = await http.get(f"{SERVICE}/{name}", params={"encoding": "json"})
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
    # Other GETs are still the page's files.
    assert (await http.get("/marketdata.v1.MarketDataService")).status_code == 404


async def test_get_errors(http: httpx.AsyncClient) -> None:
    response = await http.get(
        f"{SERVICE}/GetPrice", params={"encoding": "json", "message": '{"symbol":"NOPE"}'}
    )
    assert response.status_code == 404
    assert response.headers["cache-control"] == "no-store"
    assert bad_request(response.json()).field_violations[0].field == "symbol"
    for params in ({"encoding": "xml"}, {"encoding": "json", "connect": "v2"}):
        response = await http.get(f"{SERVICE}/GetPrice", params=params)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_argument"


async def test_get_candles_paging(http: httpx.AsyncClient) -> None:
    message: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "interval": "INTERVAL_1M",
        "startTime": "2026-01-01T00:00:00Z",
        "pageSize": 1,
    }
    opens: list[str] = []
    for _ in range(10):
        response = await http.get(
            f"{SERVICE}/GetCandles", params={"encoding": "json", "message": json.dumps(message)}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        opens += [candle["openTime"] for candle in page["candles"]]
        if not page.get("nextPageToken"):
            break
        message["pageToken"] = page["nextPageToken"]
    assert opens == ["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]
    message["pageToken"] = "garbage"
    response = await http.post(f"{SERVICE}/GetCandles", json=message)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"


# -- server streams ----------------------------------------------------------------------


async def test_subscribe_candles_json_stream(http: httpx.AsyncClient, feed: ScriptedFeed) -> None:
    request = {"series": [{"symbol": "BTCUSDT", "interval": "INTERVAL_1M"}], "history": 5}
    async with http.stream(
        "POST",
        f"{SERVICE}/SubscribeCandles",
        content=envelope(json.dumps(request).encode()),
        headers=STREAM_JSON,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/connect+json"
        frames = Envelopes(response)
        history = []
        while "snapshotEnd" not in (event := await frames.message()):
            if "candle" in event:
                history.append(event["candle"])
        assert [c["openTime"][-9:] for c in history] == ["00:00:00Z", "00:01:00Z", "00:02:00Z"]
        await feed.trade("BTCUSDT", sec(140), "777")
        while "candle" not in (event := await frames.message()):
            pass
        assert event["candle"]["close"] == 777
        assert event["candle"]["openTime"] == "2026-01-01T00:02:00Z"


async def test_stream_error_ends_with_end_of_stream(http: httpx.AsyncClient) -> None:
    request = pb.SubscribeCandlesRequest(
        series=[pb.Series(symbol="NOPE", interval=pb.INTERVAL_1M)]
    ).SerializeToString()
    response = await http.post(
        f"{SERVICE}/SubscribeCandles", content=envelope(request), headers=STREAM_PROTO
    )
    assert response.status_code == 200  # streams always answer 200
    assert response.headers["content-type"] == "application/connect+proto"
    flags, length = struct.unpack_from(">BI", response.content)
    assert flags == 0x02 and len(response.content) == 5 + length
    end = json.loads(response.content[5:])
    assert end["error"]["code"] == "not_found"
    assert bad_request(end["error"]).field_violations


async def test_stream_deadline(http: httpx.AsyncClient) -> None:
    request = pb.SubscribeCandlesRequest(
        series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)]
    ).SerializeToString()
    headers = {**STREAM_PROTO, "connect-timeout-ms": "300"}
    async with http.stream(
        "POST", f"{SERVICE}/SubscribeCandles", content=envelope(request), headers=headers
    ) as response:
        frames = Envelopes(response)
        while (frame := await frames.next())[0] == 0:
            pb.SubscribeCandlesResponse.FromString(frame[1])
        assert frame[0] == 0x02
        assert json.loads(frame[1])["error"]["code"] == "deadline_exceeded"


async def test_health_watch_stream(http: httpx.AsyncClient) -> None:
    async with http.stream(
        "POST",
        "/grpc.health.v1.Health/Watch",
        content=envelope(b'{"service": ""}'),
        headers=STREAM_JSON,
    ) as response:
        event = await Envelopes(response).message()
        assert event["status"] in ("SERVING", "NOT_SERVING")


async def test_client_going_away_ends_the_stream(http: httpx.AsyncClient, data: App) -> None:
    request = b'{"series": [{"symbol": "BTCUSDT", "interval": "INTERVAL_1M"}]}'
    async with http.stream(
        "POST", f"{SERVICE}/SubscribeCandles", content=envelope(request), headers=STREAM_JSON
    ) as response:
        await Envelopes(response).message()
        assert data.gateway.active_calls == 1
    await eventually(lambda: data.gateway.active_calls == 0, "the stream to end")


# -- CORS --------------------------------------------------------------------------------


async def test_cors_for_connect(feed: ScriptedFeed) -> None:
    origin = "https://charts.example"
    async with (
        running(feed, http_allowed_origins=origin) as app,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.gateway.port}") as http,
    ):
        await feed.quote("BTCUSDT", sec(1), "1", "2")
        asked = "connect-protocol-version, connect-timeout-ms, content-type"
        preflight = await http.options(
            f"{SERVICE}/GetPrice",
            headers={
                "origin": origin,
                "access-control-request-method": "GET",
                "access-control-request-headers": asked,
            },
        )
        assert preflight.status_code == 204
        assert "GET" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-headers"] == asked
        response = await http.get(
            f"{SERVICE}/GetPrice",
            params={"encoding": "json", "message": '{"symbol":"BTCUSDT"}'},
            headers={"origin": origin},
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        refused = await http.post(
            f"{SERVICE}/GetPrice",
            json={"symbol": "BTCUSDT"},
            headers={"origin": "https://evil.example"},
        )
        assert refused.status_code == 403


# -- authentication ----------------------------------------------------------------------


async def test_auth_errors_through_connect(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "keys.json")
    feed = ScriptedFeed()
    async with (
        running(feed, api_keys_file=str(keys.path)) as app,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.gateway.port}") as http,
    ):
        await feed.quote("BTCUSDT", sec(1), "1", "2")
        path = f"{SERVICE}/GetPrice"
        anonymous = await http.post(path, json={"symbol": "BTCUSDT"})
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "unauthenticated"
        types = [d["type"] for d in anonymous.json()["details"]]
        assert "google.rpc.ErrorInfo" in types
        wrong = await http.post(path, json={"symbol": "BTCUSDT"}, headers={"x-api-key": "x"})
        assert wrong.status_code == 401
        for auth in ({"x-api-key": keys.reader}, {"authorization": f"Bearer {keys.reader}"}):
            good = await http.post(path, json={"symbol": "BTCUSDT"}, headers=auth)
            assert good.status_code == 200, good.text
        stream = await http.post(
            f"{SERVICE}/SubscribeCandles",
            content=envelope(b'{"series": [{"symbol": "BTCUSDT", "interval": "INTERVAL_1M"}]}'),
            headers=STREAM_JSON,
        )
        assert json.loads(stream.content[5:])["error"]["code"] == "unauthenticated"


# -- a real Connect client ----------------------------------------------------------------


async def buf_curl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *BUF_CURL,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


needs_buf = pytest.mark.skipif(shutil.which(BUF) is None, reason="buf is not installed")


@needs_buf
async def test_buf_curl_unary(data: App) -> None:
    url = f"http://127.0.0.1:{data.gateway.port}{SERVICE}/GetPrice"
    code, out, err = await buf_curl("--data", '{"symbol":"BTCUSDT"}', url)
    assert code == 0, err
    assert json.loads(out)["price"]["symbol"] == "BTCUSDT"
    code, out, err = await buf_curl("--data", '{"symbol":"NOPE"}', url)
    assert code != 0
    assert "not_found" in err and "NOPE" in err


@needs_buf
async def test_buf_curl_stream(data: App, feed: ScriptedFeed) -> None:
    url = f"http://127.0.0.1:{data.gateway.port}{SERVICE}/SubscribeCandles"
    request = '{"series":[{"symbol":"BTCUSDT","interval":"INTERVAL_1M"}],"history":2}'
    process = await asyncio.create_subprocess_exec(
        *BUF_CURL,
        "--data",
        request,
        url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    out = ""

    async def read_until(text: str) -> None:
        nonlocal out
        assert process.stdout is not None
        async with asyncio.timeout(WAIT):
            while text not in out:
                chunk = await process.stdout.read(4096)
                assert chunk, f"buf curl ended before {text!r}: {out}"
                out += chunk.decode()

    try:
        await read_until('"snapshotEnd"')
        assert out.count('"candle"') == 2
        await feed.trade("BTCUSDT", sec(140), "777")
        await read_until("777")  # the live update, as it happens
    finally:
        process.terminate()
        await process.wait()


# -- pure pieces -------------------------------------------------------------------------


def test_shared_messages_are_encoded_once() -> None:
    schema = _schemas([pb.DESCRIPTOR], MethodTable(), set())[f"{SERVICE}/SubscribeCandles"]
    frames = _JsonFrames()
    update = pb.SubscribeCandlesResponse(candle=pb.Candle(symbol="BTCUSDT")).SerializeToString()
    first = frames.frame(update, schema)
    assert frames.frame(update, schema) is first  # the same object: encoded once
    assert json.loads(first[5:]) == {"candle": {"symbol": "BTCUSDT"}}
    copy = bytes(bytearray(update))
    assert frames.frame(copy, schema) == first and frames.frame(copy, schema) is not first


def test_http_status_of_every_code() -> None:
    assert {code_name(code): http_status(code) for code in grpc.StatusCode if code.value[0]} == {
        "canceled": 499,
        "unknown": 500,
        "invalid_argument": 400,
        "deadline_exceeded": 504,
        "not_found": 404,
        "already_exists": 409,
        "permission_denied": 403,
        "resource_exhausted": 429,
        "failed_precondition": 400,
        "aborted": 409,
        "out_of_range": 400,
        "unimplemented": 501,
        "internal": 500,
        "unavailable": 503,
        "data_loss": 500,
        "unauthenticated": 401,
    }


PRICE_PATH = "/marketdata.v1.MarketDataService/GetPrice"


def test_json_conversions_are_remembered_only_while_they_repeat() -> None:
    methods = MethodTable()
    schema = _schemas(DEFAULT_FILES, methods, frozenset())[PRICE_PATH]
    codec = _JsonCodec(size=2)
    first = codec.request(PRICE_PATH, schema, b'{"symbol":"BTCUSDT"}')
    assert pb.GetPriceRequest.FromString(first).symbol == "BTCUSDT"
    assert codec.request(PRICE_PATH, schema, b'{"symbol":"BTCUSDT"}') is first
    with pytest.raises(ProtocolError):
        codec.request(PRICE_PATH, schema, b'{"symbol":"BTCUSDT","nope":1}')
    big = b'{"symbol":"' + b"X" * 600 + b'"}'  # not remembered: the table stays small
    assert codec.request(PRICE_PATH, schema, big) is not codec.request(PRICE_PATH, schema, big)
    reply = pb.GetPriceResponse(price=pb.Price(symbol="ETHUSDT")).SerializeToString()
    text = codec.response(schema, reply)
    assert json.loads(text) == {"price": {"symbol": "ETHUSDT"}}
    assert codec.response(schema, reply) is text
    equal = bytes(bytearray(reply))  # equal bytes, another object: converted again
    assert codec.response(schema, equal) == text and codec.response(schema, equal) is not text
