"""The gateway's pure parts: wire format, method table, CORS rules, public names."""

from __future__ import annotations

import base64
import struct

import grpc
import pytest

import candlewire.gateway
from candlewire.gateway import Kind, MethodTable
from candlewire.gateway._cors import CorsPolicy, normalize_origin
from candlewire.gateway._wire import (
    ProtocolError,
    decode_request,
    encode_trailers,
    metadata_from_headers,
    parse_timeout,
    percent_encode,
    wire_format,
)

BINARY = wire_format("application/grpc-web+proto")
TEXT = wire_format("application/grpc-web-text")


def test_public_names() -> None:
    assert sorted(candlewire.gateway.__all__) == [
        "DEFAULT_MAX_REQUEST_BYTES",
        "DEFAULT_STATIC_DIR",
        "Gateway",
        "Kind",
        "Method",
        "MethodTable",
        "channel_options",
        "normalize_origin",
    ]


def test_method_kinds_come_from_the_descriptors() -> None:
    table = MethodTable()
    kinds = {path: method.kind for path, method in table.items()}
    service = "/marketdata.v1.MarketDataService"
    assert kinds[f"{service}/GetPrice"] is Kind.UNARY
    assert kinds[f"{service}/BatchGetPrices"] is Kind.UNARY
    assert kinds[f"{service}/GetCandles"] is Kind.UNARY
    assert kinds[f"{service}/ListSymbols"] is Kind.UNARY
    assert kinds[f"{service}/SubscribeCandles"] is Kind.SERVER_STREAMING
    assert kinds["/grpc.health.v1.Health/Check"] is Kind.UNARY
    assert kinds["/grpc.health.v1.Health/Watch"] is Kind.SERVER_STREAMING
    assert all(path.startswith((service, "/grpc.health.v1.Health/")) for path in kinds)


@pytest.mark.parametrize(
    ("content_type", "accept", "text_request", "text_response"),
    [
        ("application/grpc-web", "", False, False),
        ("application/grpc-web+proto", "*/*", False, False),
        ("Application/GRPC-Web+Proto; charset=x", "", False, False),
        ("application/grpc-web+proto", "application/grpc-web-text", False, True),
        ("application/grpc-web-text", "", True, True),
        ("application/grpc-web-text+proto", "application/grpc-web-text", True, True),
        ("application/grpc-web-text-base64", "", True, True),
    ],
)
def test_wire_format(
    content_type: str, accept: str, text_request: bool, text_response: bool
) -> None:
    wire = wire_format(content_type, accept)
    assert wire is not None
    assert (wire.text_request, wire.text_response) == (text_request, text_response)


@pytest.mark.parametrize(
    "content_type", ["application/grpc", "application/grpc-web+json", "application/json", ""]
)
def test_not_grpc_web(content_type: str) -> None:
    assert wire_format(content_type) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1H", 3600),
        ("2M", 120),
        ("3S", 3),
        ("250m", 0.25),
        ("5u", 5e-6),
        ("99999999n", 0.099999999),
    ],
)
def test_parse_timeout(value: str, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "1", "S", "1s", "123456789S", "-1S", "1.5S", "1 S"])
def test_parse_timeout_rejects(value: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_timeout(value)
    assert raised.value.code is grpc.StatusCode.INTERNAL


def test_percent_encoding_of_grpc_message() -> None:
    assert percent_encode("plain text: ok!") == "plain text: ok!"
    assert percent_encode("50% off\r\né") == "50%25 off%0D%0A%C3%A9"


def test_trailers_frame() -> None:
    frame = encode_trailers(
        grpc.StatusCode.NOT_FOUND, "no", [("x-a", "1"), ("x-b-bin", b"\xff"), ("grpc-x", "no")]
    )
    flags, length = struct.unpack_from(">BI", frame)
    assert (flags, length) == (0x80, len(frame) - 5)
    assert frame[5:] == b"grpc-status: 5\r\ngrpc-message: no\r\nx-a: 1\r\nx-b-bin: /w\r\n"


def test_text_request_in_several_padded_chunks() -> None:
    framed = b"\x00\x00\x00\x00\x02hi"
    body = base64.b64encode(framed[:1]) + b"\n" + base64.b64encode(framed[1:])
    assert TEXT is not None
    assert decode_request(body, TEXT) == b"hi"


def test_binary_request() -> None:
    assert BINARY is not None
    assert decode_request(b"\x00\x00\x00\x00\x00", BINARY) == b""
    with pytest.raises(ProtocolError, match="one request message, got 2"):
        decode_request(b"\x00\x00\x00\x00\x00" * 2, BINARY)


def test_metadata_from_headers() -> None:
    headers = [
        (b"authorization", b"Bearer x"),
        (b"x-trace-bin", base64.b64encode(b"\x00\x01").rstrip(b"=")),
        (b"grpc-timeout", b"1S"),
        (b"content-type", b"application/grpc-web"),
        (b"connection", b"keep-alive, X-Custom"),
        (b"x-custom", b"hop"),
        (b"x-bad value", b"1"),
        (b"x-nonascii", "é".encode()),
        (b"sec-ch-ua", b"Chromium"),
    ]
    assert metadata_from_headers(headers) == [
        ("authorization", "Bearer x"),
        ("x-trace-bin", b"\x00\x01"),
    ]


def test_origins() -> None:
    assert normalize_origin("HTTPS://Example.com:443/") == "https://example.com"
    assert normalize_origin("http://[::1]:8080") == "http://[::1]:8080"
    policy = CorsPolicy(["https://app.example"])
    assert policy.check(None, scheme="http", host="gw").allowed
    assert policy.check("https://app.example", scheme="http", host="gw").headers
    assert not policy.check("https://other.example", scheme="http", host="gw").allowed
    assert not policy.check("null", scheme="http", host="gw").allowed
    same = policy.check("http://gw:8080", scheme="http", host="gw:8080")
    assert (same.allowed, same.headers) == (True, ())
    anyone = CorsPolicy(["*"]).check("https://x.example", scheme="http", host="gw")
    assert anyone.allowed
    assert (b"access-control-allow-credentials", b"true") not in anyone.headers
