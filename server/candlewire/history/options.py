"""The history tier's settings, parsed (pure: importing this loads no driver)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from candlewire.domain import NANOS_PER_SECOND, Interval

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_TRADE_RETENTION",
    "format_retention",
    "parse_retention",
    "parse_trade_retention",
    "redact_url",
    "scrub",
]

DEFAULT_RETENTION = "1s=7d,trades=30d"
TRADES = "trades"
"""The retention entry of the trade history (``trades=30d``)."""
DEFAULT_TRADE_RETENTION = 30 * 86_400 * NANOS_PER_SECOND
"""Trades kept when the setting names no ``trades`` entry: 30 days."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_SPAN = re.compile(r"^(\d+)([smhdw])$")


def _entries(text: str) -> list[tuple[str, int | None]]:
    """``name=span`` entries in order: (name, nanoseconds or None for forever)."""
    out: list[tuple[str, int | None]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, span = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not interval=span (for example 1s=7d)")
        span = span.strip()
        if span == "forever":
            out.append((name.strip(), None))
            continue
        match = _SPAN.match(span)
        if match is None or int(match[1]) == 0:
            raise ValueError(f"{span!r} is not a span like 7d, 12h, 52w or forever")
        out.append((name.strip(), int(match[1]) * _UNITS[match[2]] * NANOS_PER_SECOND))
    return out


def parse_retention(text: str) -> dict[Interval, int]:
    """``1s=7d,1m=365d`` -> interval -> nanoseconds kept; ``forever`` keeps all
    (the default for intervals not named). A ``trades`` entry is the trade
    history's (:func:`parse_trade_retention`)."""
    kept: dict[Interval, int] = {}
    for name, span in _entries(text):
        if name == TRADES:
            continue
        interval = Interval.parse(name)
        if span is None:
            kept.pop(interval, None)
        else:
            kept[interval] = span
    return kept


def parse_trade_retention(text: str) -> int | None:
    """The nanoseconds of trades kept by the ``trades`` entry of ``text``
    (the last one named): :data:`DEFAULT_TRADE_RETENTION` when there is none,
    None for ``trades=forever``."""
    kept: int | None = DEFAULT_TRADE_RETENTION
    for name, span in _entries(text):
        if name == TRADES:
            kept = span
    return kept


def format_retention(kept: Mapping[Interval, int]) -> str:
    return ",".join(f"{i.label}={n // NANOS_PER_SECOND}s" for i, n in sorted(kept.items()))


def redact_url(url: str) -> str:
    """The URL without its password (for logs and error messages)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return "<unparsable URL>"
    if password:
        return url.replace(":" + password + "@", ":***@", 1)
    return url


def scrub(text: str, url: str) -> str:
    """``text`` with the password of ``url`` masked wherever it appears."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text
