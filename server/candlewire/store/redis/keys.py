"""Every Redis key of the service, built in one place.

Keys start with a configurable prefix (default ``cw:``) so several
deployments can share one Redis. A symbol's keys carry the symbol as a hash
tag (``{BTCUSDT}``), so they all live on one Redis Cluster slot and one
script may touch them together. ``{iv}`` is the interval label (``1s``,
``1m`` ... ``1M``; labels are case-sensitive, ``1m`` is a minute and ``1M``
a month).

===========================  ===========  ================================================
Key                          Type         Content
===========================  ===========  ================================================
``cw:epoch``                 string       8 random bytes naming the dataset (``SET NX``
                                          once); resume tokens of another epoch are refused
``cw:{SYM}:seq``             string       the last sequence number given to an update of
                                          the symbol (sequence numbers are per symbol)
``cw:{SYM}:epoch``           string       Redis Cluster only: the epoch the symbol's data
                                          was written under (set by its first write),
                                          checked by every write script of the symbol
``cw:{SYM}:fence``           string       Redis Cluster only: the highest fencing token
                                          that wrote the symbol; lower tokens are refused
``cw:{SYM}:quote``           string, TTL  the latest quote, expires after ``quote_ttl``
                                          so a dead feed shows as missing
``cw:{SYM}:prices``          stream       every quote (field ``q``), ``MAXLEN ~ 64``: what
                                          serving replicas follow for their price cache
``cw:{SYM}:candles:{iv}``    sorted set   one member per candle, all scores 0, ordered by
                                          member (``ZRANGE BYLEX``): ``open_time`` (8 bytes,
                                          big-endian, offset by 2**63) | ``revision`` (4
                                          bytes) | ``closed`` (1 byte) | frame; at most
                                          ``retention`` members
``cw:{SYM}:log:{iv}``        stream       the update log: entry id ``<seq>-0``, field ``m``
                                          = the member as written; ``MAXLEN ~ log_size``
``cw:{SYM}:meta:{iv}``       hash         ``evicted``: seq of the last write that evicted
                                          a candle
``cw:{SYM}:trades``          stream       the symbol's trades: entry id ``<trade seq>-0``,
                                          field ``m`` = mark (8 bytes, big-endian, offset
                                          by 2**63: the largest event time up to the
                                          trade) | frame; the oldest are trimmed beyond
                                          the trade retention (count and age)
``cw:{SYM}:trademeta``       hash         ``seq``: the last trade sequence number; ``mark``:
                                          the newest mark; ``first``: the oldest seq
                                          retained; ``evicted``: the mark of the newest
                                          trade trimmed
``cw:{SYM}:rejections``      hash         the input the ingestors' validation refused, by
                                          reason (``RejectReason`` value): field
                                          ``<reason>`` the count, ``<reason>:last`` the
                                          newest event time refused (ns); added to in
                                          batches, kept across ingestor fail-overs
``cw:lease:{SHARD}``         string, TTL  ``<fencing token>:<owner>`` of the ingestor
                                          holding the shard's lease
``cw:fence:{SHARD}``         string       the last fencing token given for the shard
===========================  ===========  ================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from candlewire.domain import SeriesKey

__all__ = ["DEFAULT_PREFIX", "Keys", "SeriesKeys"]

DEFAULT_PREFIX = "cw:"


@dataclass(frozen=True, slots=True)
class SeriesKeys:
    """The keys of one candle series."""

    candles: str
    log: str
    meta: str


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds the keys of one deployment (one ``prefix``)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if any(c in self.prefix for c in "{} \r\n"):
            raise ValueError(f"{self.prefix!r}: a key prefix may not contain braces or spaces")

    @property
    def epoch(self) -> str:
        """The dataset's epoch (8 random bytes)."""
        return f"{self.prefix}epoch"

    def seq(self, symbol: str) -> str:
        """The sequence counter of ``symbol``'s updates."""
        return f"{self.prefix}{{{symbol}}}:seq"

    def symbol_epoch(self, symbol: str) -> str:
        """The epoch ``symbol``'s data was written under (Redis Cluster)."""
        return f"{self.prefix}{{{symbol}}}:epoch"

    def symbol_fence(self, symbol: str) -> str:
        """The highest fencing token that wrote ``symbol`` (Redis Cluster)."""
        return f"{self.prefix}{{{symbol}}}:fence"

    def quote(self, symbol: str) -> str:
        """The latest quote of ``symbol``."""
        return f"{self.prefix}{{{symbol}}}:quote"

    def prices(self, symbol: str) -> str:
        """The stream of ``symbol``'s quotes."""
        return f"{self.prefix}{{{symbol}}}:prices"

    def trades(self, symbol: str) -> str:
        """The stream of ``symbol``'s trades."""
        return f"{self.prefix}{{{symbol}}}:trades"

    def trade_meta(self, symbol: str) -> str:
        """Counters and bounds of ``symbol``'s trade stream."""
        return f"{self.prefix}{{{symbol}}}:trademeta"

    def rejections(self, symbol: str) -> str:
        """What validation refused of ``symbol``, by reason."""
        return f"{self.prefix}{{{symbol}}}:rejections"

    def lease(self, name: str) -> str:
        """The ingestion lease of shard ``name``."""
        return f"{self.prefix}lease:{{{name}}}"

    def fence(self, name: str) -> str:
        """The last fencing token given for shard ``name``'s lease."""
        return f"{self.prefix}fence:{{{name}}}"

    def series(self, key: SeriesKey) -> SeriesKeys:
        """The candles, update log and metadata of one series."""
        base = f"{self.prefix}{{{key.symbol}}}:"
        label = key.interval.label
        return SeriesKeys(f"{base}candles:{label}", f"{base}log:{label}", f"{base}meta:{label}")
