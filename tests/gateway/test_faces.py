"""The same bad request gets the same answer on every face of the service.

Native gRPC, grpc-web and Connect (protobuf and JSON, unary and streaming)
must agree on the status code, the message and the error details
(``google.rpc.Status`` details: BadRequest, ErrorInfo, ...), since all three
reach one handler core behind one gatekeeper.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

from candlewire.app import App
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.gateway.test_gateway import BINARY, decode, frame
from tests.scripted import ScriptedFeed, running, sec
from tests.security.conftest import Keys

SERVICE = "/marketdata.v1.MarketDataService"
WAIT = 10.0

Details = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Outcome:
    code: str
    message: str
    details: Details


def _status_details(raw: bytes | None) -> Details:
    if raw is None:
        return []
    status = status_pb2.Status.FromString(raw)
    return [(detail.type_url, detail.value) for detail in status.details]


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Case:
    path: str
    request: Message
    key: str = "reader"  # which key of Keys to send: reader, none, bad, no-read

    @property
    def streaming(self) -> bool:
        return self.path.endswith(("/SubscribeCandles", "/SubscribeTrades"))


CASES = {
    "unknown symbol": Case(f"{SERVICE}/GetPrice", pb.GetPriceRequest(symbol="NOPE")),
    "missing symbol": Case(f"{SERVICE}/GetPrice", pb.GetPriceRequest()),
    "bad interval": Case(
        f"{SERVICE}/GetCandles", pb.GetCandlesRequest(symbol="BTCUSDT", interval=99)
    ),
    "missing interval": Case(f"{SERVICE}/GetCandles", pb.GetCandlesRequest(symbol="BTCUSDT")),
    "invalid page token": Case(
        f"{SERVICE}/GetCandles",
        pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_token="garbage"),
    ),
    "unknown symbol, stream": Case(
        f"{SERVICE}/SubscribeCandles",
        pb.SubscribeCandlesRequest(series=[pb.Series(symbol="NOPE", interval=pb.INTERVAL_1M)]),
    ),
    "unauthenticated": Case(f"{SERVICE}/GetPrice", pb.GetPriceRequest(symbol="BTCUSDT"), "none"),
    "bad key": Case(f"{SERVICE}/GetPrice", pb.GetPriceRequest(symbol="BTCUSDT"), "bad"),
    "permission denied": Case(
        f"{SERVICE}/GetPrice", pb.GetPriceRequest(symbol="BTCUSDT"), "no-read"
    ),
}


@dataclass
class Service:
    app: App
    keys: Keys
    http: httpx.AsyncClient
    channel: grpc.aio.Channel

    def headers(self, case: Case) -> dict[str, str]:
        key = {
            "reader": self.keys.reader,
            "none": None,
            "bad": "cwk_" + "x" * 43,
            "no-read": self.keys.lacking("read"),
        }[case.key]
        return {} if key is None else {"x-api-key": key}


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    keys = Keys(tmp_path / "keys.json")
    feed = ScriptedFeed()
    async with running(feed, api_keys_file=str(keys.path)) as app:
        await feed.trades([("BTCUSDT", sec(s), str(100 + s), "1") for s in (1, 30, 61)])
        await feed.quote("BTCUSDT", sec(61), "1", "2")
        base = f"http://127.0.0.1:{app.gateway.port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=WAIT) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
        ):
            yield Service(app, keys, http, channel)


async def over_grpc(service: Service, case: Case) -> Outcome:
    body = case.request.SerializeToString()
    metadata = tuple(service.headers(case).items())
    try:
        if case.streaming:
            async for _ in service.channel.unary_stream(case.path)(
                body, metadata=metadata, timeout=WAIT
            ):
                raise AssertionError("the stream should fail before its first message")
        else:
            await service.channel.unary_unary(case.path)(body, metadata=metadata, timeout=WAIT)
    except grpc.aio.AioRpcError as error:
        raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
        assert raw is None or isinstance(raw, bytes)
        return Outcome(error.code().name, error.details() or "", _status_details(raw))
    raise AssertionError("the call should fail")


async def over_grpc_web(service: Service, case: Case) -> Outcome:
    response = await service.http.post(
        case.path, content=frame(case.request), headers={**BINARY, **service.headers(case)}
    )
    assert response.status_code == 200
    reply = decode(response, response.content, text=False)
    raw = reply.trailers.get("grpc-status-details-bin")
    return Outcome(
        next(c for c in grpc.StatusCode if c.value[0] == reply.status).name,
        reply.message,
        _status_details(_unb64(raw) if raw is not None else None),
    )


def _connect_outcome(error: dict[str, object]) -> Outcome:
    code = str(error["code"])
    name = "CANCELLED" if code == "canceled" else code.upper()
    details = error.get("details", [])
    assert isinstance(details, list)
    return Outcome(
        name,
        str(error.get("message", "")),
        [(f"type.googleapis.com/{d['type']}", _unb64(d["value"])) for d in details],
    )


async def _over_connect(service: Service, case: Case, *, json_codec: bool) -> Outcome:
    headers = service.headers(case)
    if json_codec:
        payload = json_format.MessageToJson(case.request).encode()
    else:
        payload = case.request.SerializeToString()
    codec = "json" if json_codec else "proto"
    if case.streaming:
        headers["content-type"] = f"application/connect+{codec}"
        body = struct.pack(">BI", 0, len(payload)) + payload
        response = await service.http.post(case.path, content=body, headers=headers)
        assert response.status_code == 200  # stream errors are in the end-of-stream message
        flags, length = struct.unpack_from(">BI", response.content)
        assert flags == 0x02 and len(response.content) == 5 + length
        return _connect_outcome(json.loads(response.content[5:])["error"])
    headers["content-type"] = f"application/{codec}"
    response = await service.http.post(case.path, content=payload, headers=headers)
    assert response.headers["content-type"] == "application/json"
    outcome = _connect_outcome(response.json())
    assert response.status_code == HTTP_STATUS[outcome.code]
    return outcome


HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}


async def over_connect_proto(service: Service, case: Case) -> Outcome:
    return await _over_connect(service, case, json_codec=False)


async def over_connect_json(service: Service, case: Case) -> Outcome:
    return await _over_connect(service, case, json_codec=True)


FACES: dict[str, Callable[[Service, Case], Awaitable[Outcome]]] = {
    "grpc-web": over_grpc_web,
    "connect+proto": over_connect_proto,
    "connect+json": over_connect_json,
}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("case", CASES)
async def test_same_error_on_every_face(service: Service, case: str, face: str) -> None:
    expected = await over_grpc(service, CASES[case])
    assert expected.code != "OK"
    assert expected.message
    assert expected.details, "every error here carries details (BadRequest, ErrorInfo)"
    got = await FACES[face](service, CASES[case])
    assert got == expected
