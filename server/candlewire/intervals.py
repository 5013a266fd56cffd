"""Interval arithmetic on integer nanoseconds, UTC.

Fixed-length intervals are aligned to the Unix epoch, like Binance's (so 3d
candles start on 1970-01-01 plus a multiple of three days); weeks start on
Monday 00:00; months are calendar months.
"""

from __future__ import annotations

from collections.abc import Iterator

from candlewire.domain import NANOS_PER_SECOND, Interval

__all__ = ["bucket_end", "bucket_start", "buckets", "fixed_length"]

_S = NANOS_PER_SECOND
_M = 60 * _S
_H = 60 * _M
_D = 24 * _H
_LENGTHS = {
    Interval.S1: _S,
    Interval.M1: _M,
    Interval.M3: 3 * _M,
    Interval.M5: 5 * _M,
    Interval.M15: 15 * _M,
    Interval.M30: 30 * _M,
    Interval.H1: _H,
    Interval.H2: 2 * _H,
    Interval.H4: 4 * _H,
    Interval.H6: 6 * _H,
    Interval.H8: 8 * _H,
    Interval.H12: 12 * _H,
    Interval.D1: _D,
    Interval.D3: 3 * _D,
    Interval.W1: 7 * _D,
}
# 1970-01-01 was a Thursday; the first Monday is four days later.
_OFFSETS = {Interval.W1: 4 * _D}


def fixed_length(interval: Interval) -> int | None:
    """Length in nanoseconds, or None for calendar months."""
    return _LENGTHS.get(interval)


def _days_from_civil(year: int, month: int) -> int:
    """Days from 1970-01-01 to the first day of ``year``-``month``."""
    # Howard Hinnant's algorithm, exact for the proleptic Gregorian calendar.
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int]:
    """(year, month) of the day ``days`` after 1970-01-01."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month


def bucket_start(interval: Interval, time: int) -> int:
    """Start of the candle of ``interval`` that contains ``time``."""
    length = _LENGTHS.get(interval)
    if length is not None:
        offset = _OFFSETS.get(interval, 0)
        return (time - offset) // length * length + offset
    year, month = _civil_from_days(time // _D)
    return _days_from_civil(year, month) * _D


def bucket_end(interval: Interval, start: int) -> int:
    """End (exclusive) of the candle of ``interval`` that starts at ``start``."""
    length = _LENGTHS.get(interval)
    if length is not None:
        return start + length
    year, month = _civil_from_days(start // _D)
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return _days_from_civil(year, month) * _D


def buckets(interval: Interval, start: int, end: int) -> Iterator[int]:
    """Starts of the candles that begin in ``[start, end)``, ``start`` aligned."""
    current = start
    while current < end:
        yield current
        current = bucket_end(interval, current)
