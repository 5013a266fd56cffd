"""The grpc-web wire format, with no I/O (grpc/doc/PROTOCOL-WEB.md).

A body is a sequence of frames: one flag byte (``0x00`` data, ``0x80``
trailers), a four-byte big-endian length, then the payload. The trailers
frame holds an HTTP/1-style header block (``name: value\\r\\n`` lines, lower
case names) with ``grpc-status``, the percent-encoded ``grpc-message`` and the
trailing metadata. In text mode (``application/grpc-web-text``) every frame is
base64-encoded on its own, so a body is a concatenation of padded base64
chunks.

Binary (``-bin``) metadata values are base64-encoded in the trailers block
in both modes. PROTOCOL-WEB.md says text mode may skip that encoding, but a
raw value can hold CR LF and break the header block, and the proxies that
clients are tested against (Envoy, grpc-dotnet) encode them too; clients get
the same base64 they would get from gRPC over HTTP/2.

Everything here is pure: bytes and headers in, bytes and headers out, and a
:class:`ProtocolError` carrying the gRPC status for a malformed request.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

__all__ = [
    "MAX_TIMEOUT_SECONDS",
    "FrameCache",
    "Metadata",
    "ProtocolError",
    "WireFormat",
    "decode_request",
    "encode_message",
    "encode_trailers",
    "header_block",
    "metadata_from_headers",
    "metadata_headers",
    "parse_timeout",
    "percent_encode",
    "status_headers",
    "wire_format",
]

Metadata = Sequence[tuple[str, str | bytes]]
"""gRPC metadata as ``(key, value)`` pairs; values of ``-bin`` keys are bytes."""

_DATA = 0x00
_TRAILERS = 0x80
_COMPRESSED = 0x01
_HEADER = struct.Struct(">BI")

MAX_TIMEOUT_SECONDS = 100_000_000 * 3600
"""The largest ``grpc-timeout`` (eight digits of hours)."""

_TIMEOUT = re.compile(r"^([0-9]{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_METADATA_KEY = re.compile(r"^[0-9a-z_.\-]+$")
_BASE64_CHUNK = re.compile(rb"[A-Za-z0-9+/]*={0,2}")

# Headers that describe the HTTP hop or the browser, not the call.
_DROPPED_HEADERS = frozenset(
    {
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "cookie",
        "dnt",
        "expect",
        "host",
        "http2-settings",
        "if-modified-since",
        "if-none-match",
        "keep-alive",
        "origin",
        "pragma",
        "priority",
        "referer",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "upgrade-insecure-requests",
        "user-agent",
        "x-grpc-web",
        "x-user-agent",
    }
)
_DROPPED_PREFIXES = (":", "grpc-", "sec-", "proxy-", "access-control-")


class ProtocolError(Exception):
    """A request that is not valid grpc-web; ``code`` is the status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class WireFormat:
    """How a request body is encoded and how its response must be."""

    text_request: bool
    text_response: bool

    @property
    def content_type(self) -> bytes:
        """The response's content type."""
        if self.text_response:
            return b"application/grpc-web-text+proto"
        return b"application/grpc-web+proto"

    def encode(self, frame: bytes) -> bytes:
        """One frame as it goes on the wire (base64 on its own in text mode)."""
        return base64.b64encode(frame) if self.text_response else frame


_BINARY_TYPES = frozenset({"application/grpc-web", "application/grpc-web+proto"})
_TEXT_TYPES = frozenset(
    {
        "application/grpc-web-text",
        "application/grpc-web-text+proto",
        "application/grpc-web-text-base64",
    }
)


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def wire_format(content_type: str, accept: str = "") -> WireFormat | None:
    """The wire format of a request, or None when it is not grpc-web with protobuf.

    The request body is text when the content type is ``grpc-web-text``; the
    response is text when the request is, or when ``Accept`` asks for
    ``application/grpc-web-text`` (PROTOCOL-WEB.md, "Text-encoded streams").
    """
    media = _media_type(content_type)
    if media in _TEXT_TYPES:
        return WireFormat(text_request=True, text_response=True)
    if media not in _BINARY_TYPES:
        return None
    accepted = {_media_type(part) for part in accept.split(",")}
    return WireFormat(text_request=False, text_response=bool(accepted & _TEXT_TYPES))


def _decode_text(body: bytes) -> bytes:
    """Decode concatenated base64 chunks, each padded on its own."""
    compact = b"".join(body.split())
    out = bytearray()
    position = 0
    while position < len(compact):
        match = _BASE64_CHUNK.match(compact, position)
        assert match is not None  # the pattern matches the empty string
        chunk = match.group()
        if not chunk or len(chunk) % 4:
            raise ProtocolError(grpc.StatusCode.INTERNAL, "malformed base64 in grpc-web-text body")
        try:
            out += base64.b64decode(chunk, validate=True)
        except binascii.Error:
            raise ProtocolError(
                grpc.StatusCode.INTERNAL, "malformed base64 in grpc-web-text body"
            ) from None
        position = match.end()
    return bytes(out)


def decode_request(body: bytes, wire: WireFormat) -> bytes:
    """The one request message of a unary or server-streaming call."""
    data = _decode_text(body) if wire.text_request else body
    messages: list[bytes] = []
    position = 0
    while position < len(data):
        if len(data) - position < _HEADER.size:
            raise ProtocolError(grpc.StatusCode.INTERNAL, "truncated grpc-web frame header")
        flags, length = _HEADER.unpack_from(data, position)
        position += _HEADER.size
        if length > len(data) - position:
            raise ProtocolError(
                grpc.StatusCode.INTERNAL,
                f"grpc-web frame declares {length} bytes, {len(data) - position} follow",
            )
        if flags & _TRAILERS:
            raise ProtocolError(grpc.StatusCode.INTERNAL, "a request cannot carry trailers")
        if flags & _COMPRESSED:
            raise ProtocolError(
                grpc.StatusCode.UNIMPLEMENTED, "compressed grpc-web messages are not supported"
            )
        if flags:
            raise ProtocolError(grpc.StatusCode.INTERNAL, f"unknown frame flags {flags:#x}")
        messages.append(data[position : position + length])
        position += length
    if len(messages) != 1:
        raise ProtocolError(
            grpc.StatusCode.INTERNAL, f"expected one request message, got {len(messages)}"
        )
    return messages[0]


def encode_message(payload: bytes) -> bytes:
    """A data frame."""
    return _HEADER.pack(_DATA, len(payload)) + payload


class FrameCache:
    """Data frames encoded once per message object and wire format.

    A live update reaching many streams is one ``bytes`` object (the
    handlers share it: see ``candlewire.api.servicer``), so its frame is made
    for the first stream and the same bytes are written to the others. The
    cache holds the message itself, so an identity match is never a reused
    ``id``; it is small and simply restarted when full.
    """

    __slots__ = ("_entries", "_size", "encoded")

    def __init__(self, size: int = 1024) -> None:
        self._entries: dict[tuple[int, bool], tuple[bytes, bytes]] = {}
        self._size = size
        self.encoded = 0
        """Frames made (the rest were shared)."""

    def frame(self, payload: bytes, wire: WireFormat) -> bytes:
        """``wire.encode(encode_message(payload))``, shared between streams."""
        key = (id(payload), wire.text_response)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is payload:
            return entry[1]
        self.encoded += 1
        frame = wire.encode(_HEADER.pack(_DATA, len(payload)) + payload)
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[key] = (payload, frame)
        return frame


def percent_encode(message: str) -> str:
    """``grpc-message`` encoding: UTF-8, then ``%XX`` outside printable ASCII and for ``%``."""
    return "".join(
        chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}"
        for byte in message.encode("utf-8")
    )


def _metadata_value(key: str, value: str | bytes) -> str:
    if key.endswith("-bin"):
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        return base64.b64encode(raw).decode("ascii").rstrip("=")
    return value.decode("latin-1") if isinstance(value, bytes) else value


def metadata_headers(metadata: Metadata) -> list[tuple[str, str]]:
    """Metadata as ``(name, value)`` header pairs.

    Binary (``-bin``) values are base64 without padding, as in gRPC over HTTP/2;
    keys the gateway must not forward (reserved ``grpc-*`` keys other than
    ``grpc-status-details-bin``, or names that are not metadata keys) are left out.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in metadata:
        name = key.lower()
        if not _METADATA_KEY.match(name) or name in ("grpc-status", "grpc-message"):
            continue
        if name.startswith("grpc-") and name != "grpc-status-details-bin":
            continue
        text = _metadata_value(name, value)
        if any(not 0x20 <= ord(c) <= 0x7E for c in text):
            continue
        pairs.append((name, text))
    return pairs


def status_headers(
    code: grpc.StatusCode, message: str, metadata: Metadata = ()
) -> list[tuple[str, str]]:
    """``grpc-status``, ``grpc-message`` and then the metadata, as header pairs."""
    pairs = [("grpc-status", str(code.value[0]))]
    if message:
        pairs.append(("grpc-message", percent_encode(message)))
    return pairs + metadata_headers(metadata)


def header_block(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Pairs as an HTTP/1 header block without the terminating empty line."""
    return "".join(f"{name}: {value}\r\n" for name, value in pairs).encode("latin-1")


def encode_trailers(code: grpc.StatusCode, message: str, metadata: Metadata = ()) -> bytes:
    """The final (``0x80``) frame of a response."""
    block = header_block(status_headers(code, message, metadata))
    return _HEADER.pack(_TRAILERS, len(block)) + block


def parse_timeout(value: str) -> float:
    """``grpc-timeout`` (``1-8 digits`` and a unit of ``HMSmun``) in seconds."""
    match = _TIMEOUT.match(value.strip())
    if match is None:
        raise ProtocolError(grpc.StatusCode.INTERNAL, f"malformed grpc-timeout {value!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _decode_binary_header(name: str, value: bytes) -> bytes:
    text = value.strip()
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ProtocolError(
            grpc.StatusCode.INTERNAL, f"header {name} is not base64 (binary metadata)"
        ) from None


def metadata_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str | bytes]]:
    """Request headers as gRPC metadata.

    Hop-by-hop and browser headers (and those the ``Connection`` header
    names) are dropped, as are reserved ``grpc-*`` names and names that are
    not valid metadata keys; ``-bin`` values are base64-decoded.
    """
    pairs = [(name.decode("latin-1").lower(), value) for name, value in headers]
    named = {
        token.strip().lower()
        for name, value in pairs
        if name == "connection"
        for token in value.decode("latin-1").split(",")
    }
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in pairs:
        if name in _DROPPED_HEADERS or name in named or name.startswith(_DROPPED_PREFIXES):
            continue
        if not _METADATA_KEY.match(name):
            continue
        if name.endswith("-bin"):
            metadata.append((name, _decode_binary_header(name, value)))
            continue
        text = value.decode("latin-1").strip()
        if all(0x20 <= ord(c) <= 0x7E for c in text):
            metadata.append((name, text))
    return metadata
