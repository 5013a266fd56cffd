"""The Connect protocol (https://connectrpc.com/docs/protocol), next to grpc-web.

Connect is plain HTTP: a unary call is a ``POST`` of one message, JSON
(``application/json``) or binary protobuf (``application/proto``), answered
with the response message and a ``200``, or with a JSON error and the HTTP
status of its code. Methods without side effects may also be called with
``GET`` (the message in the query string), so that browsers, CDNs and proxies
can cache them. A server stream (``application/connect+json`` or
``application/connect+proto``) carries enveloped messages both ways: one flag
byte, a four-byte big-endian length, the payload; the last envelope (flag
``0x02``) is a JSON end-of-stream message with the error, if any, and the
trailing metadata. Streams always answer ``200``.

Built from the specification rather than on the ``connectrpc`` package: that
brings a server stack of its own, while here a call is a :class:`Call` and
pre-encoded request bytes handed to the same :class:`Dispatcher` as grpc-web
(the gRPC handlers in this process, behind the same gatekeeper), so codes,
messages and error details are the gRPC port's by construction. The only
Connect-specific work is HTTP framing and the JSON mapping, which uses
``google.protobuf.json_format`` with the methods' descriptors.

What is served:

- Unary ``POST``: ``application/json`` (charset ``utf-8`` optional) or
  ``application/proto``; ``connect-protocol-version: 1`` is checked when
  present and not required (connect-go's default); ``connect-timeout-ms`` is
  the deadline; ``content-encoding`` ``identity`` or ``gzip`` (anything else:
  ``unimplemented`` with ``accept-encoding: gzip``, as the specification
  says). Other request headers become metadata as for grpc-web
  (:func:`~candlewire.gateway._wire.metadata_from_headers`), without the
  ``connect-*`` protocol headers. The response's initial metadata are headers,
  its trailing metadata ``trailer-``-prefixed headers.
- Unary ``GET`` for the methods in :data:`GET_METHODS` (and any method whose
  proto options say ``idempotency_level = NO_SIDE_EFFECTS``), with the query
  parameters ``message``, ``encoding`` (``json``/``proto``), ``base64=1``,
  ``compression`` and ``connect=v1``. Responses carry ``cache-control`` fitted
  to how fresh the data must be (:func:`cache_control`). Other methods answer
  ``405`` with ``allow: POST``.
- Server streams (``SubscribeCandles``, ``SubscribeTrades``, health
  ``Watch``), written envelope by envelope as the messages come; the client
  going away, or the gateway shutting down, ends the call (the host's
  supervisor, shared with grpc-web). A live update shared by many streams is
  encoded once per codec (:class:`_JsonFrames`, and ``FrameCache`` for
  protobuf, whose data frame is byte for byte grpc-web's).
- Errors: ``{"code", "message", "details"}`` where each detail is the
  ``google.protobuf.Any`` of the gRPC status's ``grpc-status-details-bin``
  (BadRequest, RetryInfo, ErrorInfo, ...) as ``{"type", "value", "debug"}``:
  the type's full name, the serialized message in unpadded standard base64,
  and its JSON for people reading with curl.

Responses are not compressed (the request's ``accept-encoding`` is not acted
on, which the specification allows); JSON output is proto3's canonical JSON
(lowerCamelCase names, 64-bit integers as strings, enum names), as connect-es
and connect-go write it, and input accepts both the JSON and the proto field
names. Unknown JSON fields are ``invalid_argument``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from google.rpc import error_details_pb2, status_pb2

from candlewire.gateway._cors import EXPOSED_HEADERS, Verdict
from candlewire.gateway._dispatch import Call, CallError, Dispatcher, peer_of
from candlewire.gateway._methods import DEFAULT_FILES, Kind, Method
from candlewire.gateway._outlet import ResponseOutlet
from candlewire.gateway._wire import (
    FrameCache,
    Metadata,
    ProtocolError,
    WireFormat,
    metadata_from_headers,
    metadata_headers,
)

if TYPE_CHECKING:
    from candlewire.gateway._asgi import Receive, Scope, Send

__all__ = [
    "CONNECT_EXPOSED_HEADERS",
    "GET_METHODS",
    "BodyTooLarge",
    "ClientGone",
    "ConnectFace",
    "Finisher",
    "cache_control",
    "error_json",
    "http_status",
    "is_connect_request",
]

log = logging.getLogger("candlewire.gateway")

_ = error_details_pb2  # registers google.rpc.BadRequest & co for the details' "debug"

_SERVICE = "/marketdata.v1.MarketDataService/"
GET_METHODS: frozenset[str] = frozenset(
    _SERVICE + name for name in ("GetPrice", "BatchGetPrices", "GetCandles", "ListSymbols")
)
"""Methods that may be called with GET: reads without side effects. A method
whose proto options set ``idempotency_level = NO_SIDE_EFFECTS`` is added to
these (the proto does not set it today: adding the option is a breaking change
under buf's FILE rules, ``RPC_SAME_IDEMPOTENCY_LEVEL``)."""

CONNECT_EXPOSED_HEADERS = ("content-encoding",)
"""Response headers a cross-origin Connect client may read, besides metadata."""

_ENVELOPE = struct.Struct(">BI")
_COMPRESSED = 0x01
_END_STREAM = 0x02
_TIMEOUT_MS = re.compile(r"^[0-9]{1,10}$")
_JSON_TYPE = re.compile(r"^application/json(?:;\s*charset=\"?utf-?8\"?)?$")
_STREAM_JSON_TYPE = re.compile(r"^application/connect\+json(?:;\s*charset=\"?utf-?8\"?)?$")
_COMPRESSIONS = ("gzip",)
_COMMON = ((b"x-content-type-options", b"nosniff"),)

_HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# Cache lifetimes (seconds) of GET responses; see cache_control().
QUOTE_MAX_AGE = 1
SYMBOLS_MAX_AGE = 60
SETTLED_MAX_AGE = 86400
SETTLE_SECONDS = 300
"""A candle range ending this long ago, all closed, is taken as final: late
trades that correct a closed candle arrive within seconds of its close."""


class ClientGone(Exception):
    """The client went away while the request was read."""


class BodyTooLarge(Exception):
    """The request body exceeds the limit."""


class Finisher(Protocol):
    """A response the host's supervisor can end with a status."""

    @property
    def finished(self) -> bool: ...

    async def finish(
        self, code: grpc.StatusCode, message: str, trailing: Metadata, initial: Metadata = ()
    ) -> None: ...


class Host(Protocol):
    """What the Connect face borrows from the ASGI application."""

    @property
    def closing(self) -> bool: ...

    @property
    def max_request_bytes(self) -> int: ...

    async def read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes:
        """The body up to ``limit`` bytes; :class:`ClientGone`, :class:`BodyTooLarge`."""
        ...

    async def drain_body(self, receive: Receive) -> None:
        """Read and drop what is left of the request (bounded)."""
        ...

    def tracked(self) -> contextlib.AbstractContextManager[None]:
        """Counts a unary call as in flight."""
        ...

    async def supervise(self, pump: Awaitable[None], receive: Receive, response: Finisher) -> None:
        """Run a stream until it ends, the client goes away or the gateway ends it."""
        ...


# --- pure helpers -------------------------------------------------------------------------


def code_name(code: grpc.StatusCode) -> str:
    """Connect's name of a code: ``invalid_argument``, ``canceled``, ..."""
    return "canceled" if code is grpc.StatusCode.CANCELLED else code.name.lower()


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status of a unary error with this code (the specification's table)."""
    return _HTTP_STATUS.get(code, 500)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _detail(any_detail: Any) -> dict[str, Any]:
    type_name = any_detail.type_url.rsplit("/", 1)[-1]
    detail: dict[str, Any] = {"type": type_name, "value": _b64(any_detail.value)}
    with contextlib.suppress(Exception):  # debug is best effort: unknown types have none
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
        message = message_factory.GetMessageClass(descriptor).FromString(any_detail.value)
        detail["debug"] = json_format.MessageToDict(message)
    return detail


def status_details(trailing: Metadata) -> list[dict[str, Any]]:
    """The details of ``grpc-status-details-bin`` in ``trailing``, as Connect writes them."""
    for key, value in trailing:
        if key.lower() != "grpc-status-details-bin":
            continue
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        try:
            status = status_pb2.Status.FromString(raw)
        except DecodeError:
            return []
        return [_detail(detail) for detail in status.details]
    return []


def error_json(code: grpc.StatusCode, message: str, trailing: Metadata = ()) -> dict[str, Any]:
    """The Connect error object of a status."""
    error: dict[str, Any] = {"code": code_name(code)}
    if message:
        error["message"] = message
    details = status_details(trailing)
    if details:
        error["details"] = details
    return error


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _metadata_pairs(metadata: Metadata) -> list[tuple[str, str]]:
    """Metadata as header pairs, without the gRPC status details (Connect carries
    them in the error body)."""
    return [
        (name, value)
        for name, value in metadata_headers(metadata)
        if name != "grpc-status-details-bin"
    ]


def end_stream(error: tuple[grpc.StatusCode, str] | None, trailing: Metadata) -> bytes:
    """The end-of-stream envelope: the error (if any) and the trailing metadata."""
    end: dict[str, Any] = {}
    if error is not None:
        end["error"] = error_json(error[0], error[1], trailing)
    grouped: dict[str, list[str]] = {}
    for name, value in _metadata_pairs(trailing):
        grouped.setdefault(name, []).append(value)
    if grouped:
        end["metadata"] = grouped
    payload = _dumps(end)
    return _ENVELOPE.pack(_END_STREAM, len(payload)) + payload


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, "malformed gzip data") from None
    if len(out) > limit:
        raise ProtocolError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"request message larger than {limit} bytes"
        )
    if not inflater.eof:
        raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, "truncated gzip data")
    return out


def _compression(name: str | None) -> str | None:
    """``None`` (identity) or ``"gzip"``; ``unimplemented`` for anything else."""
    value = (name or "").strip().lower()
    if value in ("", "identity"):
        return None
    if value in _COMPRESSIONS:
        return value
    raise ProtocolError(
        grpc.StatusCode.UNIMPLEMENTED,
        f'unknown compression "{name}": supported encodings are {",".join(_COMPRESSIONS)}',
    )


def _timeout(value: str | None) -> float | None:
    if value is None:
        return None
    if not _TIMEOUT_MS.match(value.strip()):
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"protocol error: invalid connect timeout value: {value}",
        )
    return int(value.strip()) / 1000


def _media_type(value: str) -> str:
    return ",".join(part.strip() for part in value.lower().split(","))


@dataclass(frozen=True, slots=True)
class ConnectType:
    """What a request's content type says: stream or unary, JSON or protobuf."""

    stream: bool
    json: bool

    @property
    def content_type(self) -> bytes:
        codec = b"json" if self.json else b"proto"
        return (b"application/connect+" if self.stream else b"application/") + codec


def connect_type(content_type: str) -> ConnectType | None:
    """The Connect content type of a POST, or None when it is not one."""
    media = _media_type(content_type)
    if _JSON_TYPE.match(media):
        return ConnectType(stream=False, json=True)
    if media == "application/proto":
        return ConnectType(stream=False, json=False)
    if _STREAM_JSON_TYPE.match(media):
        return ConnectType(stream=True, json=True)
    if media == "application/connect+proto":
        return ConnectType(stream=True, json=False)
    return None


def is_connect_request(content_type: str) -> bool:
    """Whether a POST with this content type is a Connect call."""
    return connect_type(content_type) is not None


def _seconds(timestamp: Any) -> float:
    return float(timestamp.seconds) + float(timestamp.nanos) / 1e9


def cache_control(
    path: str, request: ProtoMessage, response: ProtoMessage, now: float, *, private: bool
) -> bytes:
    """The ``cache-control`` of a GET response, from how soon its data changes.

    - ``GetPrice``/``BatchGetPrices``: ``max-age=1``. A quote changes many
      times a second, so revalidating with an ETag would still cost a handler
      call per request and save only bytes; a one-second lifetime lets a CDN
      or the browser fold a burst of pollers into one call per second per
      URL, and the answer carries its own time and ``stale`` flag.
    - ``ListSymbols``: ``max-age=60`` (symbols and coverage move slowly).
    - ``GetCandles``: a settled page (an ``end_time`` at least
      :data:`SETTLE_SECONDS` ago, every candle closed, no missing range) is
      final: ``max-age=86400, immutable``. Anything reaching the forming
      candle, or recent enough to be corrected by a late trade, or with holes
      a backfill may fill, is ``max-age=1``.

    Requests with credentials get ``private`` (a shared cache must not hand
    an authenticated answer to callers the gatekeeper would refuse), others
    ``public``.
    """
    scope = "private" if private else "public"
    name = path.rsplit("/", 1)[-1]
    if name == "ListSymbols":
        return f"{scope}, max-age={SYMBOLS_MAX_AGE}".encode()
    if name == "GetCandles" and _settled(request, response, now):
        return f"{scope}, max-age={SETTLED_MAX_AGE}, immutable".encode()
    return f"{scope}, max-age={QUOTE_MAX_AGE}".encode()


def _settled(request: Any, response: Any, now: float) -> bool:
    try:
        if not request.HasField("end_time"):
            return False
        if _seconds(request.end_time) > now - SETTLE_SECONDS:
            return False
        candles = list(response.candles)
        return (
            bool(candles)
            and all(candle.closed for candle in candles)
            and not len(response.missing_ranges)
        )
    except (AttributeError, ValueError):
        return False


# --- the schema ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Schema:
    input: type[ProtoMessage]
    output: type[ProtoMessage]
    output_name: str
    get: bool


def _schemas(
    files: Iterable[FileDescriptor], methods: Mapping[str, Method], get: AbstractSet[str]
) -> dict[str, _Schema]:
    schemas: dict[str, _Schema] = {}
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                if path not in methods:
                    continue
                level = method.GetOptions().idempotency_level
                schemas[path] = _Schema(
                    _message_class(method.input_type),
                    _message_class(method.output_type),
                    method.output_type.full_name,
                    path in get or level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
                )
    return schemas


def _message_class(descriptor: Descriptor) -> type[ProtoMessage]:
    return message_factory.GetMessageClass(descriptor)


def _from_json(schema: _Schema, text: bytes) -> bytes:
    message = schema.input()
    if text.strip() and not text.lstrip().startswith(b"{"):
        name = message.DESCRIPTOR.full_name
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT, f"invalid JSON for {name}: not a JSON object"
        )
    try:
        json_format.Parse(text.decode("utf-8") if text.strip() else "{}", message)
    except (json_format.ParseError, UnicodeDecodeError) as error:
        name = message.DESCRIPTOR.full_name
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT, f"invalid JSON for {name}: {error}"
        ) from None
    return message.SerializeToString()


def _to_json(schema: _Schema, payload: bytes) -> bytes:
    message = schema.output.FromString(payload)
    return _dumps(json_format.MessageToDict(message))


_REMEMBERED_REQUEST = 512
"""Request bodies up to this size are remembered (the table stays small)."""


class _JsonCodec:
    """JSON of the unary path, each conversion done once while it repeats.

    A request body (a watchlist's poll, sent again and again) maps to the
    same protobuf bytes every time, and a response message shared between
    calls (one quote's ``GetPriceResponse``, encoded once by the handler)
    to the same JSON: ``json_format`` is the dearest step of a JSON call,
    so both are remembered in small tables that restart when full. A
    response is matched by identity (the table holds it, so an ``id`` is
    never reused while it is there).
    """

    __slots__ = ("_requests", "_responses", "_size")

    def __init__(self, size: int = 4096) -> None:
        self._requests: dict[tuple[str, bytes], bytes] = {}
        self._responses: dict[int, tuple[bytes, bytes]] = {}
        self._size = size

    def request(self, path: str, schema: _Schema, text: bytes) -> bytes:
        if len(text) > _REMEMBERED_REQUEST:
            return _from_json(schema, text)
        key = (path, text)
        found = self._requests.get(key)
        if found is None:
            found = _from_json(schema, text)  # raises for bad JSON: not remembered
            if len(self._requests) >= self._size:
                self._requests.clear()
            self._requests[key] = found
        return found

    def response(self, schema: _Schema, payload: bytes) -> bytes:
        entry = self._responses.get(id(payload))
        if entry is not None and entry[0] is payload:
            return entry[1]
        text = _to_json(schema, payload)
        if len(self._responses) >= self._size:
            self._responses.clear()
        self._responses[id(payload)] = (payload, text)
        return text


class _JsonFrames:
    """JSON envelopes encoded once per message object (see ``FrameCache``)."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int = 1024) -> None:
        self._entries: dict[int, tuple[bytes, bytes]] = {}
        self._size = size

    def frame(self, payload: bytes, schema: _Schema) -> bytes:
        entry = self._entries.get(id(payload))
        if entry is not None and entry[0] is payload:
            return entry[1]
        body = _to_json(schema, payload)
        frame = _ENVELOPE.pack(0, len(body)) + body
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[id(payload)] = (payload, frame)
        return frame


_PROTO_WIRE = WireFormat(text_request=False, text_response=False)


# --- HTTP -------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class _Headers:
    """Response headers: content type, CORS, metadata."""

    def __init__(self, content_type: bytes, verdict: Verdict) -> None:
        self.content_type = content_type
        self.verdict = verdict

    def build(
        self, pairs: list[tuple[str, str]], extra: Iterable[tuple[bytes, bytes]] = ()
    ) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", self.content_type), (b"vary", b"origin"), *_COMMON]
        if self.verdict.headers:
            names = [*EXPOSED_HEADERS, *CONNECT_EXPOSED_HEADERS, *(name for name, _ in pairs)]
            headers += self.verdict.headers
            exposed = ", ".join(dict.fromkeys(names))
            headers.append((b"access-control-expose-headers", exposed.encode()))
        headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
        headers += extra
        return headers


def _unary_pairs(initial: Metadata, trailing: Metadata) -> list[tuple[str, str]]:
    """Initial metadata as headers, trailing metadata as ``trailer-`` headers."""
    return _metadata_pairs(initial) + [
        (f"trailer-{name}", value) for name, value in _metadata_pairs(trailing)
    ]


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _unary_error(
    send: Send,
    verdict: Verdict,
    code: grpc.StatusCode,
    message: str,
    trailing: Metadata = (),
    initial: Metadata = (),
    *,
    status: int | None = None,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = _Headers(b"application/json", verdict).build(
        _unary_pairs(initial, trailing), [(b"cache-control", b"no-store"), *extra]
    )
    body = _dumps(error_json(code, message, trailing))
    await _send_whole(send, status or http_status(code), headers, body)


class _StreamResponse:
    """A server stream's response: headers once, envelopes, then end of stream."""

    def __init__(self, send: Send, headers: _Headers) -> None:
        self._send = send
        self._headers = headers
        self.started = False
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def outlet(self, encode: Callable[[bytes, Any], bytes], form: Any) -> ResponseOutlet:
        """From now on, everything this response writes goes through an
        outlet, after what the hub wrote to it directly."""
        outlet = ResponseOutlet(self._send, encode, form)
        self._send = outlet.send
        return outlet

    async def start(self, initial: Metadata) -> None:
        self.started = True
        headers = self._headers.build(_metadata_pairs(initial))
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def body(self, frame: bytes) -> None:
        await self._send({"type": "http.response.body", "body": frame, "more_body": True})

    async def finish(
        self, code: grpc.StatusCode, message: str, trailing: Metadata, initial: Metadata = ()
    ) -> None:
        if self._finished:
            return
        self._finished = True
        if not self.started:
            await self.start(initial)
        error = None if code is grpc.StatusCode.OK else (code, message)
        frame = end_stream(error, trailing)
        await self._send({"type": "http.response.body", "body": frame, "more_body": False})


def _call_metadata(scope: Scope) -> list[tuple[str, str | bytes]]:
    headers = [
        (name, value) for name, value in scope["headers"] if not bytes(name).startswith(b"connect-")
    ]
    try:
        return metadata_from_headers(headers)
    except ProtocolError as error:
        raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, error.message) from None


def _decode_base64(text: str) -> bytes:
    compact = text.strip().rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except binascii.Error:
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT, "the message query parameter is not base64"
        ) from None


@dataclass(frozen=True, slots=True)
class _GetRequest:
    json: bool
    body: bytes
    compression: str | None


def _get_request(query: bytes) -> _GetRequest:
    """The message, codec and compression of a GET's query string.

    Without ``base64=1`` the message is the percent-decoded bytes themselves
    (JSON text, or even raw protobuf), so the query is decoded byte for byte.
    """
    params: dict[str, str] = {}
    for name, value in parse_qsl(
        query.decode("latin-1"), keep_blank_values=True, encoding="latin-1"
    ):
        params.setdefault(name, value)
    version = params.get("connect")
    if version is not None and version != "v1":
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT, f"connect query parameter must be v1: got {version!r}"
        )
    encoding = params.get("encoding", "")
    if encoding not in ("json", "proto"):
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"encoding query parameter must be json or proto: got {encoding!r}",
        )
    compression = _compression(params.get("compression"))
    message = params.get("message", "")
    body = _decode_base64(message) if params.get("base64") == "1" else message.encode("latin-1")
    return _GetRequest(encoding == "json", body, compression)


def _is_private(metadata: Iterable[tuple[str, str | bytes]]) -> bool:
    return any(name in ("authorization", "x-api-key") for name, _ in metadata)


class ConnectFace:
    """Answers Connect calls with ``dispatcher``; ``host`` is the ASGI application."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        host: Host,
        *,
        files: Iterable[FileDescriptor] = DEFAULT_FILES,
        get_methods: AbstractSet[str] = GET_METHODS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dispatcher = dispatcher
        self._host = host
        self._methods = dispatcher.methods
        self._schemas = _schemas(files, self._methods, get_methods)
        self._proto_frames = FrameCache()
        self._json_frames = _JsonFrames()
        self._json = _JsonCodec()
        self._clock = clock

    def is_method(self, path: str) -> bool:
        """Whether ``path`` names a method (GETs of it are Connect calls)."""
        return path in self._methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send, verdict: Verdict) -> None:
        """A Connect request: a POST with a Connect content type, or a GET of a method."""
        if scope["method"] == "GET":
            await self._get(scope, receive, send, verdict)
            return
        kind = connect_type(_header(scope, b"content-type") or "")
        assert kind is not None, "routed here for its content type"
        path = scope["path"]
        method = self._methods.get(path)
        schema = self._schemas.get(path)
        if method is None or schema is None:
            await self._unknown(scope, receive, send, verdict, kind)
            return
        streaming = method.kind is Kind.SERVER_STREAMING
        if kind.stream != streaming or method.kind not in (Kind.UNARY, Kind.SERVER_STREAMING):
            await self._host.drain_body(receive)
            expected = "application/connect+json or application/connect+proto"
            if not streaming:
                expected = "application/json or application/proto"
            text = f"{path} is {method.kind.value}: expected {expected}\n".encode()
            headers = [(b"content-type", b"text/plain; charset=utf-8"), *_COMMON]
            headers += verdict.headers
            await _send_whole(send, 415, headers, text)
            return
        if kind.stream:
            await self._stream(scope, receive, send, verdict, kind, schema)
        else:
            await self._post(scope, receive, send, verdict, kind, schema)

    async def _unknown(
        self, scope: Scope, receive: Receive, send: Send, verdict: Verdict, kind: ConnectType
    ) -> None:
        path = scope["path"]
        why = "unknown method"
        if path.startswith("/grpc.reflection."):
            why = "server reflection is served on the gRPC port only"
        await self._host.drain_body(receive)
        # 404 is what Connect clients map to unimplemented when a route is missing.
        await _unary_error(
            send, verdict, grpc.StatusCode.UNIMPLEMENTED, f"{why}: {path}", status=404
        )

    # -- unary ------------------------------------------------------------------------

    async def _get(self, scope: Scope, receive: Receive, send: Send, verdict: Verdict) -> None:
        path = scope["path"]
        schema = self._schemas.get(path)
        method = self._methods.get(path)
        if schema is None or method is None or not schema.get:
            text = f"{path} has side effects or streams: call it with POST\n".encode()
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"POST")]
            await _send_whole(send, 405, [*headers, *_COMMON, *verdict.headers], text)
            return
        try:
            get = _get_request(scope.get("query_string", b""))
            json_codec = get.json
            body = get.body
            if get.compression is not None:
                body = _gunzip(body, self._host.max_request_bytes)
        except ProtocolError as error:
            extra = _accept_encoding(error)
            await _unary_error(send, verdict, error.code, error.message, extra=extra)
            return
        if len(body) > self._host.max_request_bytes:
            await self._too_large(send, verdict)
            return
        await self._unary(scope, send, verdict, schema, json_codec, body, get=True)

    async def _post(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        verdict: Verdict,
        kind: ConnectType,
        schema: _Schema,
    ) -> None:
        try:
            _check_version(_header(scope, b"connect-protocol-version"))
            compression = _compression(_header(scope, b"content-encoding"))
        except ProtocolError as error:
            await self._host.drain_body(receive)
            extra = _accept_encoding(error)
            await _unary_error(send, verdict, error.code, error.message, extra=extra)
            return
        limit = self._host.max_request_bytes
        try:
            body = await self._host.read_body(scope, receive, limit)
            if compression is not None:
                body = _gunzip(body, limit)
        except ClientGone:
            return
        except BodyTooLarge:
            await self._too_large(send, verdict)
            return
        except ProtocolError as error:
            await _unary_error(send, verdict, error.code, error.message)
            return
        await self._unary(scope, send, verdict, schema, kind.json, body, get=False)

    async def _too_large(self, send: Send, verdict: Verdict) -> None:
        await _unary_error(
            send,
            verdict,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"request message larger than {self._host.max_request_bytes} bytes",
        )

    async def _unary(
        self,
        scope: Scope,
        send: Send,
        verdict: Verdict,
        schema: _Schema,
        json_codec: bool,
        body: bytes,
        *,
        get: bool,
    ) -> None:
        if self._host.closing:
            await _unary_error(
                send, verdict, grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down"
            )
            return
        try:
            request = self._json.request(scope["path"], schema, body) if json_codec else body
            call = Call(
                scope["path"],
                _call_metadata(scope),
                peer_of(scope.get("client")),
                _timeout(_header(scope, b"connect-timeout-ms")),
            )
        except ProtocolError as error:
            await _unary_error(send, verdict, error.code, error.message)
            return
        with self._host.tracked():
            try:
                reply = await self._dispatcher.unary(call, request)
            except CallError as error:
                await _unary_error(
                    send, verdict, error.code, error.message, error.trailing, error.initial
                )
                return
            except Exception as error:
                log.error("connect call failed", exc_info=error)
                await _unary_error(send, verdict, grpc.StatusCode.INTERNAL, "the call failed")
                return
        content_type = b"application/json" if json_codec else b"application/proto"
        payload = self._json.response(schema, reply.message) if json_codec else reply.message
        extra: list[tuple[bytes, bytes]] = []
        if get:
            request_message = schema.input.FromString(request)
            response_message = schema.output.FromString(reply.message)
            policy = cache_control(
                call.path,
                request_message,
                response_message,
                self._clock(),
                private=_is_private(call.metadata),
            )
            extra.append((b"cache-control", policy))
        headers = _Headers(content_type, verdict).build(
            _unary_pairs(reply.initial, reply.trailing), extra
        )
        await _send_whole(send, 200, headers, payload)

    # -- server streams ---------------------------------------------------------------

    async def _stream(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        verdict: Verdict,
        kind: ConnectType,
        schema: _Schema,
    ) -> None:
        response = _StreamResponse(send, _Headers(kind.content_type, verdict))
        try:
            _check_version(_header(scope, b"connect-protocol-version"))
            compression = _compression(_header(scope, b"connect-content-encoding"))
        except ProtocolError as error:
            await self._host.drain_body(receive)
            await response.finish(error.code, error.message, ())
            return
        limit = self._host.max_request_bytes + _ENVELOPE.size
        try:
            body = await self._host.read_body(scope, receive, limit)
        except ClientGone:
            return
        except BodyTooLarge:
            await response.finish(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request message larger than {self._host.max_request_bytes} bytes",
                (),
            )
            return
        if self._host.closing:
            await response.finish(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down", ())
            return
        try:
            message = _unenvelope(body, compression, self._host.max_request_bytes)
            request = _from_json(schema, message) if kind.json else message
            call = Call(
                scope["path"],
                _call_metadata(scope),
                peer_of(scope.get("client")),
                _timeout(_header(scope, b"connect-timeout-ms")),
            )
        except ProtocolError as error:
            await response.finish(error.code, error.message, ())
            return
        pump = self._pump(call, request, response, schema, kind.json)
        await self._host.supervise(pump, receive, response)

    async def _pump(
        self,
        call: Call,
        request: bytes,
        response: _StreamResponse,
        schema: _Schema,
        json_codec: bool,
    ) -> None:
        if json_codec:
            outlet = response.outlet(self._json_frames.frame, schema)
        else:
            outlet = response.outlet(self._proto_frames.frame, _PROTO_WIRE)
        responses = self._dispatcher.stream(call, request, outlet)
        try:
            async for message in responses:
                if not response.started:
                    await response.start(responses.initial)
                await response.body(outlet.frame(message))
                outlet.ready = True
        except CallError as error:
            await response.finish(error.code, error.message, error.trailing, error.initial)
            return
        finally:
            outlet.detach()
            await responses.aclose()
        await response.finish(grpc.StatusCode.OK, "", responses.trailing, responses.initial)


def _check_version(value: str | None) -> None:
    if value is not None and value.strip() != "1":
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"connect-protocol-version must be 1: got {value!r}",
        )


def _accept_encoding(error: ProtocolError) -> list[tuple[bytes, bytes]]:
    if error.code is grpc.StatusCode.UNIMPLEMENTED:
        return [(b"accept-encoding", ",".join(_COMPRESSIONS).encode())]
    return []


def _unenvelope(body: bytes, compression: str | None, limit: int) -> bytes:
    """The one message of a server stream's request body."""
    if len(body) < _ENVELOPE.size:
        raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, "protocol error: incomplete envelope")
    flags, length = _ENVELOPE.unpack_from(body)
    if length != len(body) - _ENVELOPE.size:
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"protocol error: expected one message of {length} bytes,"
            f" got {len(body) - _ENVELOPE.size} bytes",
        )
    if flags & ~_COMPRESSED:
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT, f"protocol error: unexpected flags {flags:#x}"
        )
    message = body[_ENVELOPE.size :]
    if flags & _COMPRESSED:
        if compression is None:
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "protocol error: compressed message without connect-content-encoding",
            )
        message = _gunzip(message, limit)
    return message
