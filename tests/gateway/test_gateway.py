"""The grpc-web gateway over real HTTP, in front of the real in-process service.

Frames are decoded here, independently of the gateway's code. Waiting is on
stream events and conditions with deadlines, never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from candlewire.app import App
from candlewire.gateway import DEFAULT_STATIC_DIR, Gateway
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec

SERVICE = "/marketdata.v1.MarketDataService"
HEALTH = "/grpc.health.v1.Health"
ALLOWED = "http://allowed.example:3000"
WAIT = 10.0
MODES = ["binary", "text"]

BINARY = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
TEXT = {
    "content-type": "application/grpc-web-text",
    "accept": "application/grpc-web-text",
    "x-grpc-web": "1",
}


# -- grpc-web, decoded by hand ------------------------------------------------------------


def frame(message: Message | bytes, flags: int = 0) -> bytes:
    payload = message if isinstance(message, bytes) else message.SerializeToString()
    return struct.pack(">BI", flags, len(payload)) + payload


def unbase64(body: bytes) -> bytes:
    """Concatenated base64 chunks, each with its own padding."""
    return b"".join(base64.b64decode(c) for c in re.findall(rb"[A-Za-z0-9+/]+={0,2}", body))


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete frames, and the bytes of an incomplete one."""
    frames: list[tuple[int, bytes]] = []
    while len(data) >= 5:
        flags, length = struct.unpack_from(">BI", data)
        if len(data) < 5 + length:
            break
        frames.append((flags, data[5 : 5 + length]))
        data = data[5 + length :]
    return frames, data


def parse_trailers(block: bytes) -> dict[str, str]:
    lines = block.decode("latin-1").split("\r\n")
    assert lines[-1] == "", "a trailer block ends with CRLF"
    pairs = (line.split(":", 1) for line in lines[:-1])
    return {name.strip(): value.strip() for name, value in pairs}


@dataclass
class Reply:
    """A decoded grpc-web response."""

    http_status: int
    headers: httpx.Headers
    messages: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    trailers_only: bool = False

    @property
    def status(self) -> int:
        return int(self.trailers["grpc-status"])

    @property
    def message(self) -> str:
        return unquote(self.trailers.get("grpc-message", ""))


def decode(response: httpx.Response, body: bytes, *, text: bool) -> Reply:
    reply = Reply(response.status_code, response.headers)
    if "grpc-status" in response.headers:
        assert body == b"", "a trailers-only response has no body"
        reply.trailers_only = True
        reply.trailers = {k: v for k, v in response.headers.items() if k.startswith("grpc-")}
        return reply
    frames, rest = split_frames(unbase64(body) if text else body)
    assert rest == b""
    assert frames, "no frames"
    *data, (last_flags, last) = frames
    assert last_flags == 0x80, "the last frame carries the trailers"
    assert all(flags == 0 for flags, _ in data)
    reply.messages = [payload for _, payload in data]
    reply.trailers = parse_trailers(last)
    return reply


async def call(
    http: httpx.AsyncClient,
    path: str,
    request: Message | bytes,
    *,
    mode: str = "binary",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    text = mode == "text"
    body = frame(request)
    response = await http.post(
        path,
        content=base64.b64encode(body) if text else body,
        headers={**(TEXT if text else BINARY), **(headers or {})},
    )
    assert response.status_code == 200, response.text
    expected = "application/grpc-web-text+proto" if text else "application/grpc-web+proto"
    assert response.headers["content-type"] == expected
    return decode(response, response.content, text=text)


class Stream:
    """A streaming response read frame by frame as the chunks arrive."""

    def __init__(self, response: httpx.Response, *, text: bool) -> None:
        self.response = response
        self.text = text
        self._chunks = response.aiter_raw()
        self._pending: list[tuple[int, bytes]] = []
        self._buffer = b""
        self._text_buffer = b""

    async def next_frame(self) -> tuple[int, bytes]:
        async with asyncio.timeout(WAIT):
            while not self._pending:
                chunk = await anext(self._chunks)
                if self.text:
                    self._text_buffer += chunk
                    complete = len(self._text_buffer) - len(self._text_buffer) % 4
                    chunk, self._text_buffer = (
                        unbase64(self._text_buffer[:complete]),
                        self._text_buffer[complete:],
                    )
                frames, self._buffer = split_frames(self._buffer + chunk)
                self._pending += frames
        return self._pending.pop(0)

    async def next_response(self, *, heartbeats: bool = False) -> pb.SubscribeCandlesResponse:
        while True:
            flags, payload = await self.next_frame()
            assert flags == 0, f"expected a message, got trailers {parse_trailers(payload)}"
            response = pb.SubscribeCandlesResponse.FromString(payload)
            if heartbeats or response.WhichOneof("event") != "heartbeat":
                return response

    async def trailers(self) -> dict[str, str]:
        while True:
            flags, payload = await self.next_frame()
            if flags == 0x80:
                return parse_trailers(payload)


async def eventually(condition: Callable[[], bool], what: str, within: float = WAIT) -> None:
    """Wait for a condition that has no event of its own (polled, with a deadline)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def subscribe_request(history: int = 5, symbol: str = "BTCUSDT") -> pb.SubscribeCandlesRequest:
    series = pb.Series(symbol=symbol, interval=pb.INTERVAL_1M)
    return pb.SubscribeCandlesRequest(series=[series], history=history)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>page</title>")
    (root / "app.js").write_text("console.log('page');")
    (root / "sub" / "deep.css").write_text("body{}")
    (root / ".hidden").write_text("hidden")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.fixture
async def data(app: App, feed: ScriptedFeed) -> App:
    await feed.trades([("BTCUSDT", sec(s), str(100 + s), "1") for s in (1, 30, 61, 95, 130)])
    await feed.quote("BTCUSDT", sec(130), "229.5", "230.5")
    return app


@pytest.fixture
async def gateway(data: App, static_dir: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(
        f"127.0.0.1:{data.port}",
        static_dir=static_dir,
        allowed_origins=[ALLOWED],
        max_request_bytes=1024,
        shutdown_grace=1.0,
    )
    await gateway.start("127.0.0.1", 0)
    yield gateway
    await gateway.stop()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}", timeout=WAIT) as c:
        yield c


# -- every method, both modes ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_unary_methods(http: httpx.AsyncClient, mode: str) -> None:
    reply = await call(http, f"{SERVICE}/ListSymbols", pb.ListSymbolsRequest(), mode=mode)
    assert (reply.status, reply.trailers_only) == (0, False)
    (listed,) = reply.messages
    symbols = [s.symbol for s in pb.ListSymbolsResponse.FromString(listed).symbols]
    assert symbols == ["BTCUSDT", "ETHUSDT"]

    reply = await call(http, f"{SERVICE}/GetPrice", pb.GetPriceRequest(symbol="BTCUSDT"), mode=mode)
    price = pb.GetPriceResponse.FromString(reply.messages[0]).price
    assert (reply.status, price.bid, price.ask, price.last) == (0, 229.5, 230.5, 230.0)

    request = pb.BatchGetPricesRequest(symbols=["BTCUSDT", "ETHUSDT"])
    reply = await call(http, f"{SERVICE}/BatchGetPrices", request, mode=mode)
    prices = pb.BatchGetPricesResponse.FromString(reply.messages[0]).prices
    assert [(p.symbol, p.stale) for p in prices] == [("BTCUSDT", False), ("ETHUSDT", True)]

    request2 = pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=10)
    reply = await call(http, f"{SERVICE}/GetCandles", request2, mode=mode)
    candles = pb.GetCandlesResponse.FromString(reply.messages[0]).candles
    assert [c.close for c in candles] == [130.0, 195.0, 230.0]

    check = health_pb2.HealthCheckRequest(service="")
    reply = await call(http, f"{HEALTH}/Check", check, mode=mode)
    assert health_pb2.HealthCheckResponse.FromString(reply.messages[0]).status == 1  # SERVING


@pytest.mark.parametrize("mode", MODES)
async def test_subscribe_streams_history_then_live(
    http: httpx.AsyncClient, data: App, feed: ScriptedFeed, mode: str
) -> None:
    text = mode == "text"
    body = frame(subscribe_request())
    headers = {**(TEXT if text else BINARY), "grpc-timeout": "30S"}
    async with http.stream(
        "POST",
        f"{SERVICE}/SubscribeCandles",
        content=base64.b64encode(body) if text else body,
        headers=headers,
    ) as response:
        assert response.status_code == 200
        assert "grpc-status" not in response.headers
        stream = Stream(response, text=text)
        history = [(await stream.next_response()).candle.close for _ in range(3)]
        assert history == [130.0, 195.0, 230.0]
        assert (await stream.next_response()).WhichOneof("event") == "snapshot_end"
        # Live updates arrive while the response is open: one frame flushed per message.
        await feed.trade("BTCUSDT", sec(150), "250")
        live = await stream.next_response()
        assert (live.candle.close, live.candle.high, live.resume_token != "") == (250, 250, True)
        beat = await stream.next_response(heartbeats=True)
        assert beat.WhichOneof("event") == "heartbeat"


@pytest.mark.parametrize("mode", MODES)
async def test_health_watch_streams(http: httpx.AsyncClient, mode: str) -> None:
    text = mode == "text"
    body = frame(health_pb2.HealthCheckRequest(service=""))
    async with http.stream(
        "POST",
        f"{HEALTH}/Watch",
        content=base64.b64encode(body) if text else body,
        headers=TEXT if text else BINARY,
    ) as response:
        flags, payload = await Stream(response, text=text).next_frame()
        assert flags == 0
        assert health_pb2.HealthCheckResponse.FromString(payload).status == 1


# -- statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_immediate_error_is_trailers_only(http: httpx.AsyncClient, mode: str) -> None:
    reply = await call(http, f"{SERVICE}/GetPrice", pb.GetPriceRequest(symbol="NOPE%é"), mode=mode)
    assert reply.trailers_only
    assert reply.status == grpc.StatusCode.NOT_FOUND.value[0]
    assert reply.trailers["grpc-message"] == "unknown symbol 'NOPE%25%C3%A9'"
    assert reply.message == "unknown symbol 'NOPE%é'"
    details = reply.trailers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(details + "=" * (-len(details) % 4)))
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "symbol"


@pytest.mark.parametrize("mode", MODES)
async def test_stream_error_is_trailers_only(http: httpx.AsyncClient, mode: str) -> None:
    reply = await call(
        http, f"{SERVICE}/SubscribeCandles", subscribe_request(symbol="NOPE"), mode=mode
    )
    assert (reply.trailers_only, reply.status) == (True, grpc.StatusCode.NOT_FOUND.value[0])


@pytest.mark.parametrize("mode", MODES)
async def test_deadline_ends_a_stream_with_status_in_trailers(
    http: httpx.AsyncClient, mode: str
) -> None:
    reply = await call(
        http,
        f"{SERVICE}/SubscribeCandles",
        subscribe_request(history=2),
        mode=mode,
        headers={"grpc-timeout": "400m"},
    )
    assert not reply.trailers_only
    events = [pb.SubscribeCandlesResponse.FromString(m).WhichOneof("event") for m in reply.messages]
    assert events[:3] == ["candle", "candle", "snapshot_end"]
    assert reply.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


@pytest.mark.parametrize(
    "path",
    [
        f"{SERVICE}/NoSuchMethod",
        "/marketdata.v1.Nope/GetPrice",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",  # served, not exposed
        "/",
    ],
)
async def test_unknown_methods_are_unimplemented(http: httpx.AsyncClient, path: str) -> None:
    reply = await call(http, path, pb.ListSymbolsRequest())
    assert (reply.trailers_only, reply.status) == (True, grpc.StatusCode.UNIMPLEMENTED.value[0])


# -- metadata -------------------------------------------------------------------------------


class EchoServer:
    """A gRPC server whose GetPrice echoes the call's metadata and deadline back."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.time_remaining: float | None = None
        self.server = grpc.aio.server()
        self.hang = asyncio.Event()
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            self._echo
        )
        never: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            self._never
        )
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "marketdata.v1.MarketDataService", {"GetPrice": handler, "GetCandles": never}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def _never(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await self.hang.wait()  # a method that never answers
        return request

    async def _echo(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.seen = [(key, value) for key, value in context.invocation_metadata() or ()]
        self.time_remaining = context.time_remaining()
        await context.send_initial_metadata((("x-initial", "first"),))
        context.set_trailing_metadata((("x-trailing", "last"), ("x-blob-bin", b"\x00\xff\r\n")))
        return request


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.server.start()
    yield server
    await server.server.stop(0)


@pytest.mark.parametrize("mode", MODES)
async def test_metadata_both_ways(echo: EchoServer, mode: str) -> None:
    gateway = Gateway(f"127.0.0.1:{echo.port}", static_dir=None, allowed_origins=[ALLOWED])
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as http:
            reply = await call(
                http,
                f"{SERVICE}/GetPrice",
                pb.GetPriceRequest(symbol="X"),
                mode=mode,
                headers={
                    "authorization": "Bearer abc",
                    "x-request-id": "r-1",
                    "x-token-bin": base64.b64encode(b"\x01\x02\xff").decode().rstrip("="),
                    "grpc-timeout": "5S",
                    "origin": ALLOWED,
                    "cookie": "session=1",
                    "user-agent": "Mozilla/5.0",
                    "x-user-agent": "grpc-web-javascript/0.1",
                    "sec-fetch-mode": "cors",
                    "connection": "keep-alive, x-hop",
                    "x-hop": "1",
                },
            )
    finally:
        await gateway.stop()
    seen = dict(echo.seen)
    assert seen["authorization"] == "Bearer abc"
    assert seen["x-request-id"] == "r-1"
    assert seen["x-token-bin"] == b"\x01\x02\xff"
    for dropped in ("origin", "cookie", "x-user-agent", "sec-fetch-mode", "x-hop", "x-grpc-web"):
        assert dropped not in seen
    # grpc-timeout 5S arrives as a deadline; gRPC may round it up by its timer's granularity.
    assert echo.time_remaining is not None and 3.0 < echo.time_remaining <= 5.1
    assert reply.messages == [pb.GetPriceRequest(symbol="X").SerializeToString()]
    assert reply.headers["x-initial"] == "first"
    assert reply.trailers["x-trailing"] == "last"
    blob = reply.trailers["x-blob-bin"]
    assert base64.b64decode(blob + "=" * (-len(blob) % 4)) == b"\x00\xff\r\n"
    exposed = reply.headers["access-control-expose-headers"]
    assert {"grpc-status", "grpc-message", "x-initial"} <= {h.strip() for h in exposed.split(",")}


async def test_deadline_of_a_unary_call(echo: EchoServer) -> None:
    gateway = Gateway(f"127.0.0.1:{echo.port}", static_dir=None)
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as http:
            started = time.monotonic()
            reply = await call(
                http,
                f"{SERVICE}/GetCandles",
                pb.GetCandlesRequest(),
                headers={"grpc-timeout": "300m"},
            )
    finally:
        await gateway.stop()
    assert (reply.trailers_only, reply.status) == (True, grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert 0.25 < time.monotonic() - started < 5


# -- disconnects and backpressure -----------------------------------------------------------


async def test_client_disconnect_cancels_the_upstream_stream(
    http: httpx.AsyncClient, data: App, gateway: Gateway
) -> None:
    assert len(data.hub) == 0
    async with http.stream(
        "POST", f"{SERVICE}/SubscribeCandles", content=frame(subscribe_request()), headers=BINARY
    ) as response:
        stream = Stream(response, text=False)
        while (await stream.next_response()).WhichOneof("event") != "snapshot_end":
            pass
        assert len(data.hub) == 1
        assert gateway.active_calls == 1
    # Leaving the block closes the connection mid-stream.
    await eventually(lambda: len(data.hub) == 0, "the hub subscription to end")
    await eventually(lambda: gateway.active_calls == 0, "the gateway call to end")


async def test_a_browser_that_stops_reading_slows_the_stream(static_dir: Path) -> None:
    """Backpressure: the gateway does not read ahead for a client that does not read.

    The client's receive window closes, the gateway's ``send`` blocks, it stops
    reading from upstream, the server's stream stalls, and the hub's bounded
    queue ends the subscriber (RESOURCE_EXHAUSTED), as for any slow consumer,
    instead of the gateway buffering every update.
    """
    feed = ScriptedFeed(["BTCUSDT"])
    settings: dict[str, Any] = {"intervals": "1m", "subscriber_queue_size": 8}
    async with running(feed, **settings) as app:
        await feed.attached()
        gateway = Gateway(f"127.0.0.1:{app.port}", static_dir=None)
        await gateway.start()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
            body = frame(subscribe_request(history=0))
            head = (
                f"POST {SERVICE}/SubscribeCandles HTTP/1.1\r\nhost: x\r\n"
                f"content-type: application/grpc-web+proto\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode()
            await asyncio.get_running_loop().sock_sendall(sock, head + body)
            await eventually(lambda: len(app.hub) == 1, "the subscription")
            minute = 60
            while len(app.hub) == 1:
                assert minute < 60 * 20_000, "the subscriber was never ended"
                batch = [("BTCUSDT", sec(minute + 60 * i), "100", "1") for i in range(200)]
                await feed.trades(batch)
                minute += 60 * 200
            pushed = minute // 60
        finally:
            sock.close()
            await gateway.stop()
    # Each minute is a closed candle the client never read; far fewer fit in the buffers.
    assert pushed < 20_000


# -- CORS ------------------------------------------------------------------------------------


async def test_preflight_from_an_allowed_origin(http: httpx.AsyncClient) -> None:
    asked = "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization"
    response = await http.options(
        f"{SERVICE}/SubscribeCandles",
        headers={
            "origin": ALLOWED,
            "access-control-request-method": "POST",
            "access-control-request-headers": asked,
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-headers"] == asked
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "origin" in response.headers["vary"]


async def test_cross_origin_call_exposes_grpc_headers(http: httpx.AsyncClient) -> None:
    reply = await call(
        http, f"{SERVICE}/GetPrice", pb.GetPriceRequest(symbol="NOPE"), headers={"origin": ALLOWED}
    )
    assert reply.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= exposed
    assert reply.headers["vary"] == "origin"


async def test_refused_origin(http: httpx.AsyncClient, data: App) -> None:
    evil = "http://evil.example"
    response = await http.options(
        f"{SERVICE}/GetPrice",
        headers={"origin": evil, "access-control-request-method": "POST"},
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    response = await http.post(
        f"{SERVICE}/SubscribeCandles",
        content=frame(subscribe_request()),
        headers={**BINARY, "origin": evil},
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert len(data.hub) == 0  # never forwarded


async def test_same_origin_needs_no_allow_list(http: httpx.AsyncClient, gateway: Gateway) -> None:
    reply = await call(
        http,
        f"{SERVICE}/ListSymbols",
        pb.ListSymbolsRequest(),
        headers={"origin": f"http://127.0.0.1:{gateway.port}"},
    )
    assert reply.status == 0
    assert "access-control-allow-origin" not in reply.headers


def test_allow_list_rejects_malformed_origins() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        Gateway("127.0.0.1:1", allowed_origins=["example.com/path"])


# -- malformed requests ---------------------------------------------------------------------


def _body(*frames: bytes) -> bytes:
    return b"".join(frames)


GOOD = frame(pb.ListSymbolsRequest())


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"\x00\x00\x00", "INTERNAL", id="truncated-header"),
        pytest.param(b"\x00\x00\x00\x00\x09abc", "INTERNAL", id="short-payload"),
        pytest.param(b"", "INTERNAL", id="no-message"),
        pytest.param(_body(GOOD, GOOD), "INTERNAL", id="two-messages"),
        pytest.param(frame(b"k: v\r\n", 0x80), "INTERNAL", id="trailers-in-request"),
        pytest.param(frame(b"\x1f\x8b", 0x01), "UNIMPLEMENTED", id="compressed"),
        pytest.param(frame(b"", 0x40), "INTERNAL", id="unknown-flags"),
    ],
)
async def test_malformed_binary_bodies(http: httpx.AsyncClient, body: bytes, code: str) -> None:
    response = await http.post(f"{SERVICE}/ListSymbols", content=body, headers=BINARY)
    reply = decode(response, response.content, text=False)
    assert (reply.trailers_only, reply.status) == (True, grpc.StatusCode[code].value[0])
    assert (await call(http, f"{SERVICE}/ListSymbols", pb.ListSymbolsRequest())).status == 0


@pytest.mark.parametrize(
    "body",
    [b"AAAA!AAA", b"AAAAA", b"AA=A", base64.b64encode(GOOD)[:-1]],
    ids=["bad-alphabet", "bad-length", "padding-inside", "truncated"],
)
async def test_malformed_base64(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post(f"{SERVICE}/ListSymbols", content=body, headers=TEXT)
    reply = decode(response, response.content, text=True)
    assert (reply.trailers_only, reply.status) == (True, grpc.StatusCode.INTERNAL.value[0])


async def test_text_body_in_padded_chunks(http: httpx.AsyncClient) -> None:
    raw = frame(pb.BatchGetPricesRequest(symbols=["BTCUSDT"]))
    chunked = base64.b64encode(raw[:4]) + b"\r\n" + base64.b64encode(raw[4:])
    response = await http.post(f"{SERVICE}/BatchGetPrices", content=chunked, headers=TEXT)
    assert decode(response, response.content, text=True).status == 0


@pytest.mark.parametrize(
    "content_type",
    # application/json is a Connect call (tests/gateway/test_connect.py).
    ["application/grpc", "application/grpc-web+json", "text/plain", ""],
)
async def test_wrong_content_type(http: httpx.AsyncClient, content_type: str) -> None:
    response = await http.post(
        f"{SERVICE}/ListSymbols", content=GOOD, headers={"content-type": content_type}
    )
    assert response.status_code == 415


async def test_oversized_requests(http: httpx.AsyncClient) -> None:
    big = frame(pb.BatchGetPricesRequest(symbols=["BTCUSDT"] * 200))  # > 1024 bytes
    response = await http.post(f"{SERVICE}/BatchGetPrices", content=big, headers=BINARY)
    reply = decode(response, response.content, text=False)
    assert reply.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
        for _ in range(64):
            yield big[:512]

    response = await http.post(f"{SERVICE}/BatchGetPrices", content=chunks(), headers=BINARY)
    reply = decode(response, response.content, text=False)
    assert reply.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert (await call(http, f"{SERVICE}/ListSymbols", pb.ListSymbolsRequest())).status == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("grpc-timeout", "soon"), ("grpc-timeout", "123456789S"), ("x-key-bin", "%%%")],
)
async def test_malformed_headers(http: httpx.AsyncClient, name: str, value: str) -> None:
    reply = await call(
        http, f"{SERVICE}/ListSymbols", pb.ListSymbolsRequest(), headers={name: value}
    )
    assert (reply.trailers_only, reply.status) == (True, grpc.StatusCode.INTERNAL.value[0])


# -- static files ---------------------------------------------------------------------------


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET with the request target sent exactly as given (no client normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(WAIT):
            data = await reader.read()
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


async def test_serves_the_page(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    again = await http.get("/", headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304
    script = await http.get("/app.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.text == "console.log('page');"
    assert (await http.get("/sub/deep.css")).status_code == 200
    head = await http.head("/app.js")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(script.content))


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/.hidden",
        "/escape.txt",
        "/%00index.html",
        "/..\\secret.txt",
        "/missing.js",
        "/sub",
    ],
)
async def test_nothing_outside_the_page(gateway: Gateway, target: str) -> None:
    status, data = await raw_get(gateway.port, target)
    assert status in (400, 404)
    assert b"TOP SECRET" not in data and b"hidden" not in data.split(b"\r\n\r\n", 1)[1]


async def test_other_methods(http: httpx.AsyncClient) -> None:
    assert (await http.put("/index.html", content=b"x")).status_code == 405
    assert (await http.delete(f"{SERVICE}/GetPrice")).status_code == 405
    assert (await http.post("/index.html", content=b"x")).status_code == 415


async def test_the_packaged_page_is_served(data: App) -> None:
    gateway = Gateway(f"127.0.0.1:{data.port}")
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as http:
            page = await http.get("/")
            assert page.status_code == 200 and 'src="app.js"' in page.text
            for asset in ("app.js", "style.css", "favicon.svg"):
                assert (await http.get(f"/{asset}")).status_code == 200
    finally:
        await gateway.stop()
    assert (DEFAULT_STATIC_DIR / "index.html").is_file()


# -- HTTP/2 and lifecycle -------------------------------------------------------------------


async def test_http2_prior_knowledge(gateway: Gateway, feed: ScriptedFeed) -> None:
    async with (
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", http1=False, http2=True, timeout=WAIT
        ) as http,
        http.stream(
            "POST",
            f"{SERVICE}/SubscribeCandles",
            content=frame(subscribe_request()),
            headers=BINARY,
        ) as response,
    ):
        assert response.http_version == "HTTP/2"
        stream = Stream(response, text=False)
        while (await stream.next_response()).WhichOneof("event") != "snapshot_end":
            pass
        await feed.trade("BTCUSDT", sec(151), "260")
        assert (await stream.next_response()).candle.close == 260


async def test_stop_refuses_new_calls_and_ends_streams(data: App) -> None:
    gateway = Gateway(f"127.0.0.1:{data.port}", static_dir=None, shutdown_grace=0.2)
    await gateway.start()
    base_url = f"http://127.0.0.1:{gateway.port}"
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=WAIT) as http,
        http.stream(
            "POST",
            f"{SERVICE}/SubscribeCandles",
            content=frame(subscribe_request()),
            headers=BINARY,
        ) as response,
    ):
        stream = Stream(response, text=False)
        while (await stream.next_response()).WhichOneof("event") != "snapshot_end":
            pass
        gateway.close()
        try:  # refused by the app (UNAVAILABLE) or, once closed, by the listener
            refused = await call(http, f"{SERVICE}/ListSymbols", pb.ListSymbolsRequest())
            assert refused.status == grpc.StatusCode.UNAVAILABLE.value[0]
        except httpx.TransportError:
            pass
        stopping = asyncio.create_task(gateway.wait_closed())
        trailers = await stream.trailers()
        assert trailers["grpc-status"] == str(grpc.StatusCode.UNAVAILABLE.value[0])
        await stopping
    await eventually(lambda: len(data.hub) == 0, "the upstream stream to end")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=1).close()


# -- one HTTP/2 connection, one bad request: only its own stream ends ------------------------


class H2Connection:
    """A raw HTTP/2 client (prior knowledge): what browsers and proxies may send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.data: dict[int, bytearray] = {}
        self.responses: dict[int, dict[str, str]] = {}
        self.ended: set[int] = set()
        self.terminated: h2.events.ConnectionTerminated | None = None

    @classmethod
    async def open(cls, port: int) -> H2Connection:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.conn.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def post(
        self, path: str, headers: Mapping[str, str], body: bytes | None, port: int
    ) -> int:
        """Open a stream; ``body=None`` leaves the request body open."""
        stream = self.conn.get_next_available_stream_id()
        pseudo = [(":method", "POST"), (":scheme", "http"), (":path", path)]
        pseudo.append((":authority", f"127.0.0.1:{port}"))
        self.conn.send_headers(stream, [*pseudo, *headers.items()], end_stream=body == b"")
        if body:
            self.conn.send_data(stream, body, end_stream=True)
        await self.flush()
        return stream

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(WAIT):
            while not condition():
                if self.terminated is not None:
                    raise AssertionError(f"connection terminated waiting for {what}")
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise AssertionError(f"connection closed waiting for {what}")
                for event in self.conn.receive_data(chunk):
                    if isinstance(event, h2.events.ResponseReceived):
                        self.responses[event.stream_id] = {
                            k.decode(): v.decode() for k, v in event.headers
                        }
                    elif isinstance(event, h2.events.DataReceived):
                        self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                        self.conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        self.ended.add(event.stream_id)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.terminated = event
                await self.flush()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


REJECTED = {
    "wrong-content-type": ({"content-type": "text/plain"}, "415"),
    "refused-origin": ({**BINARY, "origin": "http://evil.example"}, "403"),
    "unknown-method": (BINARY, "200"),  # UNIMPLEMENTED, answered before the body
    "too-large": ({**BINARY, "content-length": "5000"}, "200"),  # RESOURCE_EXHAUSTED
}


@pytest.mark.parametrize("case", list(REJECTED))
async def test_a_rejected_request_ends_only_its_own_stream(
    gateway: Gateway, feed: ScriptedFeed, case: str
) -> None:
    port = gateway.port
    client = await H2Connection.open(port)
    try:
        live = await client.post(
            f"{SERVICE}/SubscribeCandles", BINARY, frame(subscribe_request()), port
        )
        await client.until(lambda: len(client.data.get(live, b"")) > 0, "history")

        headers, status = REJECTED[case]
        path = f"{SERVICE}/NoSuchMethod" if case == "unknown-method" else f"{SERVICE}/GetPrice"
        bad = await client.post(path, headers, None, port)
        await client.until(lambda: bad in client.responses, "the refusal")
        assert client.responses[bad][":status"] == status
        # The client goes on sending the body it announced, as clients do.
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            client.conn.send_data(bad, b"\0" * int(headers.get("content-length", 16384)))
            client.conn.send_data(bad, b"", end_stream=True)
            await client.flush()

        received = len(client.data[live])
        await feed.trade("BTCUSDT", sec(151), "260")
        await client.until(lambda: len(client.data[live]) > received, "a live update")
        assert live not in client.ended and client.terminated is None
    finally:
        await client.close()


async def test_connections_that_trickle_their_headers_are_closed(data: App) -> None:
    """A connection that trickles its request line and headers (a byte at a
    time, never finishing) is closed after the idle timeout."""
    request_bytes = b"POST /marketdata.v1.MarketDataService/GetPrice"
    gateway = Gateway(f"127.0.0.1:{data.port}", static_dir=None, idle_timeout=0.5)
    await gateway.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:

        async def trickle() -> None:
            for byte in request_bytes:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)  # slower than any client that means to finish

        sending = asyncio.create_task(trickle())
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b""  # closed by the server, nothing answered
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
    finally:
        writer.close()
        await gateway.stop()
