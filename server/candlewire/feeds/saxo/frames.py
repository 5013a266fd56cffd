"""Saxo's streaming wire format: binary websocket messages holding several frames.

Each websocket message (binary) carries one or more messages, back to back
(developer.saxo/openapi/learn/plain-websocket-streaming, "Receiving messages")::

    offset  size  field
    0       8     message id, uint64 little-endian (used to reconnect: ``messageid=``)
    8       2     reserved
    10      1     reference id size n
    11      n     reference id, ASCII (a subscription's ReferenceId, or ``_heartbeat`` ...)
    11+n    1     payload format: 0 = UTF-8 JSON, 1 = protobuf
    12+n    4     payload size m, uint32 little-endian
    16+n    m     payload

Reference ids that start with ``_`` are control messages (``_heartbeat``,
``_resetsubscriptions``, ``_disconnect``, ``_reconnect``); they are always
JSON. This module is pure (no I/O): :func:`decode` splits a websocket
message into :class:`Frame` objects and :func:`encode` builds one (the fake
Saxo of the tests and the benchmark use it). Payloads are left as bytes: the
caller decides how to read them (see :mod:`~candlewire.feeds.saxo.schemas`).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from candlewire.feeds.saxo.errors import SaxoError

__all__ = ["FORMAT_JSON", "FORMAT_PROTOBUF", "Frame", "decode", "encode"]

FORMAT_JSON = 0
FORMAT_PROTOBUF = 1

_ID = struct.Struct("<QH")  # message id, reserved
_SIZE = struct.Struct("<BI")  # payload format, payload size
_HEAD = _ID.size + 1  # up to the reference id


class Frame(NamedTuple):
    """One message of a websocket message."""

    message_id: int
    reference_id: str
    payload_format: int
    payload: bytes

    @property
    def control(self) -> bool:
        """A control message (``_heartbeat``, ``_disconnect`` ...), not a subscription's data."""
        return self.reference_id.startswith("_")


def decode(data: bytes) -> list[Frame]:
    """Split one websocket message into its frames.

    Raises :class:`SaxoError` naming the offset when the message is
    truncated or a reference id is not ASCII. An unknown payload format is
    not an error here: the frame is returned with its format, and the reader
    decides (the feed skips what it cannot read and says so).
    """
    frames: list[Frame] = []
    append = frames.append
    unpack_id = _ID.unpack_from
    unpack_size = _SIZE.unpack_from
    view = memoryview(data)
    end = len(data)
    index = 0
    try:
        while index < end:
            if end - index < _HEAD:
                raise SaxoError(f"streaming message truncated at byte {index}: no header")
            message_id, _reserved = unpack_id(data, index)
            size = data[index + 10]
            ref_end = index + _HEAD + size
            if ref_end + _SIZE.size > end:
                raise SaxoError(f"streaming message truncated at byte {index}: reference id")
            reference = data[index + _HEAD : ref_end].decode("ascii")
            payload_format, payload_size = unpack_size(data, ref_end)
            start = ref_end + _SIZE.size
            index = start + payload_size
            if index > end:
                raise SaxoError(
                    f"streaming message truncated: payload of {reference!r} needs "
                    f"{payload_size} bytes, {end - start} left"
                )
            append(Frame(message_id, reference, payload_format, bytes(view[start:index])))
    except UnicodeDecodeError:
        raise SaxoError(f"streaming message: reference id at byte {index} is not ASCII") from None
    return frames


def encode(
    message_id: int, reference_id: str, payload: bytes, payload_format: int = FORMAT_JSON
) -> bytes:
    """One frame, as Saxo sends it (concatenate several for one websocket message)."""
    reference = reference_id.encode("ascii")
    if len(reference) > 255:
        raise ValueError("a reference id has at most 255 characters")
    return b"".join(
        (
            _ID.pack(message_id, 0),
            bytes((len(reference),)),
            reference,
            _SIZE.pack(payload_format, len(payload)),
            payload,
        )
    )
