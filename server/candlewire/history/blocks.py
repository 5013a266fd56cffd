"""Blocks: how the history tier packs candles into rows (pure, no I/O).

A block holds the candles of one series whose open times fall in one span
(a minute of 1s candles, an hour of 1m candles ... a year of weekly or
monthly ones; at most 60 candles, so a block stays within a page and is
never compressed or moved out of line). Per block the row keeps four packed
columns: open times (int64), revisions (int64), frame lengths (int32), all
little-endian, and the frames back to back. A read of 1,000 candles is then
about 20 rows, sliced here with ``bisect`` and handed on as one
:class:`~candlewire.codec.FrameRun`. Spans never cross a time partition of
:mod:`~candlewire.history.schema`, so retention still drops whole partitions.
"""

from __future__ import annotations

import datetime as dt
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from candlewire.domain import NANOS_PER_SECOND, Interval

__all__ = [
    "BLOCK_CAPACITY",
    "Block",
    "block_length",
    "block_of",
    "decode_blocks",
    "encode_blocks",
    "pack",
    "unpack",
]

_S = NANOS_PER_SECOND
_H = 3600 * _S
_D = 24 * _H
_FIXED = {
    Interval.S1: 60 * _S,
    Interval.M1: _H,
    Interval.M3: 3 * _H,
    Interval.M5: 4 * _H,
    Interval.M15: 12 * _H,
    Interval.M30: _D,
    Interval.H1: _D,
    Interval.H2: _D,
    Interval.H4: _D,
    Interval.H6: _D,
    Interval.H8: _D,
    Interval.H12: _D,
}
_MONTHLY = {Interval.D1, Interval.D3}
BLOCK_CAPACITY = 60
"""Most candles a block holds (an hour of 1m candles, 53 weeks ...)."""
_LITTLE = sys.byteorder == "little"


def block_length(interval: Interval) -> int | None:
    """The fixed span of a block of ``interval`` (None: calendar months or years)."""
    return _FIXED.get(interval)


def block_of(interval: Interval, open_time: int) -> int:
    """Start of the block that holds a candle of ``interval`` opening at ``open_time``."""
    length = _FIXED.get(interval)
    if length is not None:
        return open_time - open_time % length
    day = dt.datetime.fromtimestamp(open_time // _S, dt.UTC)
    if interval in _MONTHLY:
        start = dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC)
    else:
        start = dt.datetime(day.year, 1, 1, tzinfo=dt.UTC)
    return int(start.timestamp()) * _S


def pack(values: Iterable[int], code: str) -> bytes:
    packed = array(code, values)
    if not _LITTLE:
        packed.byteswap()
    return packed.tobytes()


def unpack(data: bytes, code: str) -> array[int]:
    values = array(code)
    values.frombytes(data)
    if not _LITTLE:
        values.byteswap()
    return values


@dataclass(slots=True)
class Block:
    """The candles of one block, ascending by open time."""

    times: array[int]
    revisions: array[int]
    lengths: array[int]
    frames: bytes

    @classmethod
    def empty(cls) -> Block:
        return cls(array("q"), array("q"), array("i"), b"")

    @classmethod
    def decode(cls, times: bytes, revisions: bytes, lengths: bytes, frames: bytes) -> Block:
        return cls(unpack(times, "q"), unpack(revisions, "q"), unpack(lengths, "i"), frames)

    def entries(self) -> Iterator[tuple[int, int, bytes]]:
        """(open time, revision, frame) of each candle."""
        offset = 0
        frames = self.frames
        for t, revision, length in zip(self.times, self.revisions, self.lengths, strict=True):
            yield t, revision, frames[offset : offset + length]
            offset += length

    def merged(self, new: Mapping[int, tuple[int, bytes]]) -> Block | None:
        """This block with ``new`` (open time -> (revision, frame)) applied where
        the revision is newer; None when nothing changes."""
        current = {t: (revision, frame) for t, revision, frame in self.entries()}
        changed = False
        for t, (revision, frame) in new.items():
            found = current.get(t)
            if found is None or found[0] < revision:
                current[t] = (revision, frame)
                changed = True
        if not changed:
            return None
        times = sorted(current)
        frames = [current[t][1] for t in times]
        return Block(
            array("q", times),
            array("q", (current[t][0] for t in times)),
            array("i", map(len, frames)),
            b"".join(frames),
        )

    def columns(self) -> tuple[int, bytes, bytes, bytes, bytes]:
        """count, times, revisions, lengths, frames as stored."""
        if _LITTLE:
            return (
                len(self.times),
                self.times.tobytes(),
                self.revisions.tobytes(),
                self.lengths.tobytes(),
                self.frames,
            )
        return (
            len(self.times),
            pack(self.times, "q"),
            pack(self.revisions, "q"),
            pack(self.lengths, "i"),
            self.frames,
        )

    def window(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Indices ``[lo, hi)`` of the candles with ``start <= open time < end``."""
        times = self.times
        lo = 0 if start is None else bisect_left(times, start)
        hi = len(times) if end is None else bisect_left(times, end)
        return lo, max(lo, hi)

    def offset(self, index: int) -> int:
        return sum(self.lengths[:index])


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_FIELDS = struct.Struct(">iqii")  # block_start (8), count (4)


def encode_blocks(blocks: Iterable[tuple[str, int, int, Block]]) -> bytes:
    """(symbol, interval, block start, block) rows in binary COPY format, in the
    column order of ``candles``: symbol, interval, block_start, count, times,
    revisions, lengths, frames."""
    parts = [_COPY_HEADER]
    append = parts.append
    prefixes: dict[tuple[str, int], bytes] = {}
    for symbol, interval, start, block in blocks:
        prefix = prefixes.get((symbol, interval))
        if prefix is None:
            raw = symbol.encode()
            prefix = prefixes[(symbol, interval)] = (
                struct.pack(">hi", 8, len(raw)) + raw + struct.pack(">ih", 2, interval)
            )
        count, times, revisions, lengths, frames = block.columns()
        append(prefix)
        append(_FIELDS.pack(8, start, 4, count))
        for column in (times, revisions, lengths, frames):
            append(struct.pack(">i", len(column)))
            append(column)
    append(_COPY_TRAILER)
    return b"".join(parts)


_LEN = struct.Struct(">i")


def decode_blocks(data: bytes) -> list[tuple[str, int, int, Block]]:
    """The rows of :func:`encode_blocks` back (for a load that must merge)."""
    out: list[tuple[str, int, int, Block]] = []
    view = memoryview(data)
    pos = len(_COPY_HEADER)
    while True:
        (fields,) = struct.unpack_from(">h", view, pos)
        pos += 2
        if fields == -1:
            return out
        values: list[bytes] = []
        for _ in range(fields):
            (size,) = _LEN.unpack_from(view, pos)
            pos += 4
            values.append(bytes(view[pos : pos + size]))
            pos += size
        symbol = values[0].decode()
        (interval,) = struct.unpack(">h", values[1])
        (start,) = struct.unpack(">q", values[2])
        out.append((symbol, interval, start, Block.decode(*values[4:8])))
