"""Opaque tokens: resume tokens of SubscribeCandles and page tokens of GetCandles.

Both are URL-safe base64 of a small binary record ending in a CRC-32, so a
mangled token is refused as INVALID_ARGUMENT rather than misread. A token
carries a fingerprint of the request it belongs to; presenting it with other
request fields is an error too.

Resume token, version 2::

    u8 version | 8s store epoch | u32 request fingerprint | u8 phase |
    u16 series index | i64 cursor | varint position... | u32 crc

A position is a vector: for each distinct symbol of the request, in the
order the request names them, the sequence number of the last update of that
symbol delivered (sequence numbers grow per symbol; numbers of different
symbols are not comparable). In the history phase the stream resumes in the
snapshot taken at those positions, after candle ``cursor`` (an open time) of
series ``series index``; in the live phase it replays every update after
them.

Version 1 carried one position for all symbols; a version 1 token is refused
(INVALID_ARGUMENT on ``resume_token``): its position cannot be mapped onto
per-symbol sequences, and guessing would risk a silent gap.
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

_RESUME = struct.Struct(">B8sIBHq")
_PAGE = struct.Struct(">BIq")
_CRC = struct.Struct(">I")
_VERSION = 2
_PAGE_VERSION = 1
_MAX_SEQ = 2**64 - 1
_NO_CURSOR = -(2**63)


def fingerprint(parts: Iterable[object]) -> int:
    """A 32-bit fingerprint of request fields."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def _seal(body: bytes) -> str:
    return base64.urlsafe_b64encode(body + _CRC.pack(zlib.crc32(body))).rstrip(b"=").decode()


def _open(token: str, field: str) -> bytes:
    """The body of a sealed token (at least one byte, the version)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidArgument(field, "not a token issued by this service") from None
    body, crc = raw[:-4], raw[-4:]
    if len(raw) < 5 or _CRC.pack(zlib.crc32(body)) != crc:
        raise InvalidArgument(field, "not a token issued by this service")
    return body


def _varints(values: Iterable[int]) -> bytes:
    out = bytearray()
    for value in values:
        while value > 0x7F:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def _read_varints(data: bytes, offset: int, field: str) -> tuple[int, ...]:
    values: list[int] = []
    value = shift = 0
    for byte in data[offset:]:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:
                raise InvalidArgument(field, "not a token issued by this service")
            continue
        if value > _MAX_SEQ:
            raise InvalidArgument(field, "not a token issued by this service")
        values.append(value)
        value = shift = 0
    if shift:
        raise InvalidArgument(field, "not a token issued by this service")
    return tuple(values)


class Phase(enum.IntEnum):
    HISTORY = 0
    LIVE = 1


@dataclass(frozen=True, slots=True)
class ResumeToken:
    epoch: bytes
    request: int
    phase: Phase
    positions: tuple[int, ...]
    """Per distinct symbol of the request, in request order."""
    series_index: int = 0
    cursor: int | None = None

    def encode(self) -> str:
        cursor = _NO_CURSOR if self.cursor is None else self.cursor
        head = _RESUME.pack(
            _VERSION, self.epoch, self.request, self.phase, self.series_index, cursor
        )
        return _seal(head + _varints(self.positions))

    @classmethod
    def decode(cls, token: str, field: str = "resume_token") -> ResumeToken:
        body = _open(token, field)
        if _is_page_token(body):
            raise InvalidArgument(
                field, "a page token of GetCandles, not a resume token of a subscription"
            )
        if body[0] == 1:
            raise InvalidArgument(
                field, "issued by an older version of this service; subscribe without it"
            )
        if body[0] != _VERSION or len(body) < _RESUME.size:
            raise InvalidArgument(field, "not a token issued by this service")
        _, epoch, request, phase, index, cursor = _RESUME.unpack_from(body)
        if phase not in (Phase.HISTORY, Phase.LIVE):
            raise InvalidArgument(field, "not a token issued by this service")
        positions = _read_varints(body, _RESUME.size, field)
        return cls(
            epoch, request, Phase(phase), positions, index, None if cursor == _NO_CURSOR else cursor
        )


def _is_page_token(body: bytes) -> bool:
    """Page tokens and version 1 resume tokens share the leading byte; page
    tokens are the only tokens of exactly ``_PAGE.size`` bytes (a resume token
    of either version has at least ``_RESUME.size``)."""
    return len(body) == _PAGE.size and body[0] == _PAGE_VERSION


def live_token(epoch: bytes, request: int, positions: Iterable[int]) -> str:
    """``ResumeToken(epoch, request, Phase.LIVE, tuple(positions)).encode()``, no object."""
    head = _RESUME.pack(_VERSION, epoch, request, Phase.LIVE, 0, _NO_CURSOR)
    return _seal(head + _varints(positions))


@dataclass(frozen=True, slots=True)
class PageToken:
    request: int
    next_start: int

    def encode(self) -> str:
        return _seal(_PAGE.pack(_PAGE_VERSION, self.request, self.next_start))

    @classmethod
    def decode(cls, token: str, field: str = "page_token") -> PageToken:
        body = _open(token, field)
        if not _is_page_token(body):
            if body[0] == _VERSION and len(body) >= _RESUME.size:
                raise InvalidArgument(
                    field, "a resume token of a subscription, not a page token of GetCandles"
                )
            raise InvalidArgument(field, "not a token issued by this service")
        _, request, next_start = _PAGE.unpack(body)
        return cls(request, next_start)
