"""Opaque tokens: resume tokens of SubscribeCandles and page tokens of GetCandles.

Both are URL-safe base64 of a small binary record ending in a CRC-32, so a
mangled token is refused as INVALID_ARGUMENT rather than misread. A token
carries a fingerprint of the request it belongs to; presenting it with other
request fields is an error too.

Resume token, version 1::

    u8 version | 8s store epoch | u32 request fingerprint | u8 phase |
    u64 position | u16 series index | i64 cursor | u32 crc

``position`` is a store log position. In the history phase the stream resumes
in the snapshot taken at ``position``, after candle ``cursor`` (an open time)
of series ``series index``; in the live phase it replays every update after
``position``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from candlewire.errors import InvalidArgument

__all__ = ["PageToken", "Phase", "ResumeToken", "fingerprint", "live_token"]

_RESUME = struct.Struct(">B8sIBQHq")
_PAGE = struct.Struct(">BIq")
_CRC = struct.Struct(">I")
_VERSION = 1
_NO_CURSOR = -(2**63)


def fingerprint(parts: Iterable[object]) -> int:
    """A 32-bit fingerprint of request fields."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def _seal(body: bytes) -> str:
    return base64.urlsafe_b64encode(body + _CRC.pack(zlib.crc32(body))).rstrip(b"=").decode()


def _open(token: str, size: int, field: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidArgument(field, "not a token issued by this service") from None
    body, crc = raw[:-4], raw[-4:]
    if len(raw) != size + 4 or _CRC.pack(zlib.crc32(body)) != crc or body[0] != _VERSION:
        raise InvalidArgument(field, "not a token issued by this service")
    return body


class Phase(enum.IntEnum):
    HISTORY = 0
    LIVE = 1


@dataclass(frozen=True, slots=True)
class ResumeToken:
    epoch: bytes
    request: int
    phase: Phase
    position: int
    series_index: int = 0
    cursor: int | None = None

    def encode(self) -> str:
        cursor = _NO_CURSOR if self.cursor is None else self.cursor
        return _seal(
            _RESUME.pack(
                _VERSION,
                self.epoch,
                self.request,
                self.phase,
                self.position,
                self.series_index,
                cursor,
            )
        )

    @classmethod
    def decode(cls, token: str, field: str = "resume_token") -> ResumeToken:
        _, epoch, request, phase, position, index, cursor = _RESUME.unpack(
            _open(token, _RESUME.size, field)
        )
        if phase not in (Phase.HISTORY, Phase.LIVE):
            raise InvalidArgument(field, "not a token issued by this service")
        return cls(
            epoch, request, Phase(phase), position, index, None if cursor == _NO_CURSOR else cursor
        )


def live_token(epoch: bytes, request: int, position: int) -> str:
    """``ResumeToken(epoch, request, Phase.LIVE, position).encode()``, without the object."""
    return _seal(_RESUME.pack(_VERSION, epoch, request, Phase.LIVE, position, 0, _NO_CURSOR))


@dataclass(frozen=True, slots=True)
class PageToken:
    request: int
    next_start: int

    def encode(self) -> str:
        return _seal(_PAGE.pack(_VERSION, self.request, self.next_start))

    @classmethod
    def decode(cls, token: str, field: str = "page_token") -> PageToken:
        _, request, next_start = _PAGE.unpack(_open(token, _PAGE.size, field))
        return cls(request, next_start)
