"""The history tier's settings, parsed (pure: importing this loads no driver)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from candlewire.domain import NANOS_PER_SECOND, Interval

__all__ = ["DEFAULT_RETENTION", "format_retention", "parse_retention", "redact_url", "scrub"]

DEFAULT_RETENTION = "1s=7d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_SPAN = re.compile(r"^(\d+)([smhdw])$")


def parse_retention(text: str) -> dict[Interval, int]:
    """``1s=7d,1m=365d`` -> interval -> nanoseconds kept; ``forever`` keeps all
    (the default for intervals not named)."""
    kept: dict[Interval, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, span = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not interval=span (for example 1s=7d)")
        interval = Interval.parse(name.strip())
        span = span.strip()
        if span == "forever":
            kept.pop(interval, None)
            continue
        match = _SPAN.match(span)
        if match is None or int(match[1]) == 0:
            raise ValueError(f"{span!r} is not a span like 7d, 12h, 52w or forever")
        kept[interval] = int(match[1]) * _UNITS[match[2]] * NANOS_PER_SECOND
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
