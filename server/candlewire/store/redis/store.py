"""The Redis store: the same contract as the memory store, shared by processes.

The key schema is in :mod:`candlewire.store.redis.keys`. A candle is one member of
a sorted set whose members all score 0, so ``ZRANGE ... BYLEX`` orders them
by their first 8 bytes, the open time::

    be64(open_time + 2**63) | be32(revision) | u8(closed) | frame

Upserts run in a Lua script (one ``EVALSHA`` per symbol and write call;
every script is a file of ``scripts/``, see :mod:`candlewire.store.redis.lua`): for
each candle it compares revisions, replaces or inserts the member, evicts
beyond the retention, takes the symbol's next sequence number and appends the
member to the series' stream with the sequence number as its entry id. So the
streams of a symbol are in its sequence order, and a resume position is an
entry id per symbol. Every script touches the keys of one symbol only (one
hash tag, one Redis Cluster slot).

Each stream is capped with ``XADD ... MAXLEN ~ log_size``: Redis keeps at
least ``log_size`` entries and drops whole nodes of older ones from the head.
Entries are only ever removed from the head, so once ``XINFO STREAM`` counts
more entries added than it holds (Redis 7.0), every position before the first
retained entry may be gone: a read after such a position raises
:class:`DataExpired` and never silently skips updates.

Reads of candles run in a script as well, which returns the open times and
the frames each concatenated into one string: no Python object per candle
(see :class:`~candlewire.codec.FrameRun`). Snapshots read the head, the
candles and, for a position in the past, the log in one script, so they are
consistent with the position they report. :meth:`RedisStore.follow_updates`
reads the log with each series' stored count and oldest open time (for a
replica's candle cache, which must see evictions).

The epoch is created once per Redis dataset (``SET NX``) and read at
:meth:`RedisStore.connect`; every write script checks it, and :meth:`ping`
re-reads it, so a flushed Redis gets a new epoch and old tokens are refused.
A position ahead of a symbol's counter (its data was lost since) is expired
as well.

A Redis restarted from an older snapshot keeps its epoch while its counters
go back: numbers already given would be given again to other updates. So
the store remembers, per symbol, the highest number it was given (writes) or
saw (reads, heads, snapshots) under the current epoch; a counter found behind
it (at every :meth:`ping`, read and write), or a write given a number it had
seen, means the dataset was rolled back. The store then rotates the epoch
(compare-and-set: once, whoever notices first), which makes the rolled-back
dataset a new one for every process: old tokens are refused, replicas end
their streams, and the ingestor rebuilds history from its backfill, as after
a flush.

**Redis Cluster** (a ``redis+cluster://`` or ``rediss+cluster://`` URL): a
script may not reach the epoch key or a lease key, which live in other
slots. So each symbol's slot keeps its own copy of the epoch
(``{SYM}:epoch``, written by the symbol's first write with the epoch the
writer read, then compared by every write script of the symbol; after a
refusal the copy takes the epoch of the dataset's key, so a copy written by
a writer that had not yet noticed a flush is corrected once), and
fencing is checked against the highest fencing token that wrote the symbol
(``{SYM}:fence``): a writer whose token is lower than one already seen is
refused. Scripts of several symbols run concurrently, one per symbol, in
order per symbol; redis-py routes each ``EVALSHA`` by its keys' slot and
loads a script on every primary when a node does not know it.

Trades go to one stream per symbol (``{SYM}:trades``, entry id the trade's
sequence number), appended and trimmed by one script per symbol and write;
a range script finds time bounds by bisection over the marks (which never
decrease). Serving replicas wait on those streams with ``XREAD``
(:meth:`RedisStore.wait_for_trades`).

Every redis-py error is raised as :class:`StoreUnavailable`. The client
retries a command once on connection errors and reconnects by itself on the
next call once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import struct
from array import array
from bisect import bisect_left
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from candlewire.codec import FrameRun, candle_frame, trade_frame
from candlewire.domain import Candle, MarketState, PriceType, Quote, SeriesKey, Source, Trade
from candlewire.errors import CandlewireError, DataExpired, LeaseLost, StoreUnavailable
from candlewire.store.base import (
    Bounds,
    CandleSlice,
    Position,
    Snapshot,
    TradeSlice,
    TradeSymbol,
    TradeUpdate,
    Update,
)
from candlewire.store.redis import lua
from candlewire.store.redis.keys import DEFAULT_PREFIX, Keys, SeriesKeys

__all__ = ["CLUSTER_SCHEMES", "Bounds", "RedisStore"]

log = logging.getLogger(__name__)

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
"""URL schemes that select Redis Cluster (the rest of the URL names one node)."""

_OFFSET = 1 << 63
_KEY = struct.Struct(">Q")
_HEAD = struct.Struct(">QIB")  # open time key, revision, closed
_MAX_ID = (1 << 64) - 1
_PRICES_KEPT = 64  # entries kept (at least) per price stream
_CHUNK = 2000  # candles per write script: bounds the time one script blocks Redis
_by_seq = attrgetter("seq")

_Row = tuple[int, int, bytes]  # open time, closed, frame
_Entry = tuple[int, int, int, int, bytes]  # seq, open time, revision, closed, frame


def _key(open_time: int) -> bytes:
    """The 8 bytes that order a member by open time (clamped to the int64 range)."""
    return _KEY.pack(min(max(open_time + _OFFSET, 0), _MAX_ID))


def _member(candle: Candle, frame: bytes) -> bytes:
    return _HEAD.pack(candle.open_time + _OFFSET, candle.revision, candle.closed) + frame


def _unpack(packed: Sequence[bytes]) -> tuple[list[int], FrameRun, bytes]:
    """Open times, frames and closed flags (one byte each) from a read
    script's ``{keys, lengths, frames, closed}``."""
    keys, lengths, frames, closed = packed
    n = len(keys) // 8
    times = [k - _OFFSET for k in struct.unpack(f">{n}Q", keys)]
    sizes = array("I", lengths)
    if sizes.itemsize != 4:  # pragma: no cover - every platform Python supports has 4
        sizes = array("I", struct.unpack(f">{n}I", lengths))
    elif n and struct.pack("=I", 1) != struct.pack(">I", 1):
        sizes.byteswap()
    return times, FrameRun(frames, sizes), closed


def _entry(entry_id: bytes, member: bytes) -> _Entry:
    key, revision, closed = _HEAD.unpack_from(member)
    return (int(entry_id.partition(b"-")[0]), key - _OFFSET, revision, closed, member[13:])


def _encode_quote(quote: Quote) -> bytes:
    return "|".join(
        (
            str(quote.time),
            str(quote.bid),
            str(quote.ask),
            str(quote.bid_size),
            str(quote.ask_size),
            str(int(quote.source)),
            str(quote.receive_time),
            "" if quote.last is None else str(quote.last),
            str(int(quote.market_state)),
            str(int(quote.price_type)),
        )
    ).encode()


def _decode_quote(symbol: str, raw: bytes) -> Quote:
    # Quotes written before market state and price type were kept have 8 fields.
    time, bid, ask, bid_size, ask_size, source, receive_time, last, *extra = raw.decode().split("|")
    market, price_type = (int(extra[0]), int(extra[1])) if len(extra) >= 2 else (0, 0)
    return Quote(
        symbol,
        int(time),
        Decimal(bid),
        Decimal(ask),
        Decimal(bid_size),
        Decimal(ask_size),
        Source(int(source)),
        int(receive_time),
        Decimal(last) if last else None,
        MarketState(market),
        PriceType(price_type),
    )


def _bytes(value: object) -> bytes | None:
    """A reply as bytes (the client does not decode replies)."""
    return value if isinstance(value, bytes) else None


def _expired(key: SeriesKey, at: int) -> DataExpired:
    return DataExpired(f"history of {key} at position {at} is no longer retained")


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Raise every redis-py error as StoreUnavailable."""
    try:
        yield
    except (RedisError, RedisClusterException) as error:
        raise StoreUnavailable(f"redis: {error}") from error


async def _gathered(calls: Sequence[Awaitable[Any]]) -> list[Any]:
    """Run ``calls`` concurrently; raise the first error once all are done."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class RedisStore:
    """Implements :class:`~candlewire.store.base.Store` on Redis (7.0 or later).

    ``url`` is a redis-py URL (``redis://host:6379/0``), or a node of a Redis
    Cluster as ``redis+cluster://host:7000`` (``rediss+cluster://`` with TLS).
    Call :meth:`connect` before use; it reads (or creates) the dataset's epoch.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        retention: int = 5000,
        log_size: int = 4096,
        quote_ttl: float = 30.0,
        timeout: float = 2.0,
        ticks: int = 100,
        trade_retention: int = 100_000,
        trade_window: int | None = None,
    ) -> None:
        if retention < 1 or log_size < 1 or trade_retention < 1:
            raise ValueError("retention, log_size and trade_retention must be positive")
        if trade_window is not None and trade_window <= 0:
            raise ValueError("trade_window must be positive")
        self._trade_retention = trade_retention
        self._trade_window = trade_window
        if quote_ttl <= 0:
            raise ValueError("quote_ttl must be positive")
        self._keys = Keys(prefix)
        self._retention = retention
        self._log_size = log_size
        self._quote_ttl_ms = max(1, round(quote_ttl * 1000))
        # The price stream of a symbol is also its recent ticks (GetRecentTicks).
        self._ticks_kept = max(ticks, _PRICES_KEPT)
        self._epoch: bytes | None = None
        self._seen: dict[str, int] = {}
        """Per symbol, the highest sequence number given or read under the epoch."""
        self.cluster = url.startswith(CLUSTER_SCHEMES)
        # One quick retry on connection errors, so a command fails within
        # about `timeout` when Redis is down; the pool reconnects on later calls.
        self._redis: aioredis.Redis | RedisCluster
        if self.cluster:
            self._redis = RedisCluster.from_url(
                url.replace("+cluster", "", 1),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
        else:
            self._redis = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
                health_check_interval=10,
            )
        self._lease_key = self._keys.lease("-")  # a name no shard has: never checked
        self._token = ""
        scripts = lua.load(cluster=self.cluster)
        register = self._redis.register_script
        self._write = register(scripts.write)
        self._quote = register(scripts.quote)
        self._acquire = register(scripts.acquire)
        self._renew = register(scripts.renew)
        self._range = register(scripts.range)
        self._times = register(scripts.times)
        self._snapshot = register(scripts.snapshot)
        self._updates = register(scripts.updates)
        self._follow = register(scripts.follow)
        self._trades_write = register(scripts.trades_write)
        self._trades_range = register(scripts.trades_range)
        self._rotate = register(scripts.rotate)
        self._rejections = register(scripts.rejections)
        self._series_keys: dict[SeriesKey, SeriesKeys] = {}

    @property
    def keys(self) -> Keys:
        """The key builder of this store's prefix."""
        return self._keys

    @property
    def epoch(self) -> bytes:
        if self._epoch is None:
            raise StoreUnavailable("redis: not connected yet")
        return self._epoch

    async def connect(self) -> None:
        """Read the dataset's epoch, creating it on a new dataset."""
        with _translated():
            await self._load_epoch()

    async def _load_epoch(self) -> bytes:
        key = self._keys.epoch
        epoch = _bytes(await self._redis.get(key))
        if epoch is None:
            await self._redis.set(key, os.urandom(8), nx=True)
            epoch = _bytes(await self._redis.get(key))
            if epoch is None:  # flushed again in between: the next call retries
                raise StoreUnavailable("redis: the epoch key vanished")
        if epoch != self._epoch:
            self._seen.clear()  # numbers of another dataset
        self._epoch = epoch
        return epoch

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers; notice a flushed or
        rolled-back dataset."""
        with _translated():
            await self._load_epoch()
            if self._seen:
                mark = self._mark()
                symbols = list(mark[1])
                raws = await self._mget([self._keys.seq(s) for s in symbols])
                heads = {s: int(raw or 0) for s, raw in zip(symbols, raws, strict=True)}
                await self._check_heads(heads, mark)

    def _mark(self) -> tuple[bytes | None, dict[str, int]]:
        """The epoch and the numbers seen, taken before a read or write is
        sent: whatever Redis answers it must be at or past these."""
        return self._epoch, dict(self._seen)

    async def _check_heads(
        self, heads: Mapping[str, int], mark: tuple[bytes | None, dict[str, int]]
    ) -> bool:
        """Note the counters read; rotate the epoch if one is behind a number
        seen under it before the read was sent (the dataset was rolled back).
        True if the dataset was rolled back."""
        epoch, before = mark
        if epoch is None or epoch != self._epoch:
            return False  # the dataset changed meanwhile: these numbers may be of either
        behind = [(s, h, before[s]) for s, h in heads.items() if h < before.get(s, 0)]
        if behind:
            await self._rolled_back(epoch, behind)
            return True
        seen = self._seen
        for symbol, head in heads.items():
            if head > seen.get(symbol, 0):
                seen[symbol] = head
        return False

    async def _rolled_back(self, old: bytes, behind: Sequence[tuple[str, int, int]]) -> None:
        """The dataset of epoch ``old`` went back in time: make it a new
        dataset (rotate the epoch, unless another process did already)."""
        current = _bytes(await self._rotate(keys=[self._keys.epoch], args=[old, os.urandom(8)]))
        described = ", ".join(f"{s} at {h} after {n} was seen" for s, h, n in behind)
        if current is None:
            raise StoreUnavailable("redis: the epoch key vanished")
        log.warning(
            "redis: the dataset was rolled back (%s; restarted from an older snapshot?): "
            "it is a new dataset from now on",
            described,
        )
        self._seen.clear()
        self._epoch = current

    async def close(self) -> None:
        with _translated():
            await self._redis.aclose()

    def _guard_keys(self, symbol: str) -> list[str]:
        """KEYS[1] and KEYS[2] of a write script of ``symbol``."""
        if self.cluster:
            return [self._keys.symbol_epoch(symbol), self._keys.symbol_fence(symbol)]
        return [self._keys.epoch, self._lease_key]

    async def _run(
        self, script: AsyncScript, calls: Sequence[tuple[list[Any], list[Any]]]
    ) -> list[Any]:
        """Run ``script`` once per ``(keys, args)``: pipelined on one Redis,
        concurrently on a cluster (each call on its keys' node)."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [await script(keys=keys, args=args)]
        if self.cluster:
            return await _gathered([script(keys=keys, args=args) for keys, args in calls])
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await script(keys=keys, args=args, client=pipe)  # type: ignore[arg-type]
            results: list[Any] = await pipe.execute()
        return results

    async def _mget(self, keys: Sequence[str]) -> list[Any]:
        if self.cluster:
            assert isinstance(self._redis, RedisCluster)
            return await self._redis.mget_nonatomic(list(keys))
        return await self._redis.mget(list(keys))

    def _series(self, key: SeriesKey) -> SeriesKeys:
        found = self._series_keys.get(key)
        if found is None:
            found = self._series_keys[key] = self._keys.series(key)
        return found

    async def _refused(self, error: ResponseError, symbols: Sequence[str]) -> CandlewireError:
        """The error a write script's refusal (for ``symbols``) stands for."""
        if "CWFENCED" in str(error):
            return LeaseLost(f"redis: {self._lease_key} is held by another ingestor")
        if "CWEPOCH" in str(error):
            epoch = await self._load_epoch()
            if self.cluster:
                # The dataset's epoch is the one in its key. A symbol's copy
                # that differs was written under a replaced dataset (or by a
                # writer that had not noticed the replacement yet): it takes
                # the current epoch, and the caller starts afresh.
                await _gathered(
                    [self._redis.set(self._keys.symbol_epoch(s), epoch) for s in symbols]
                )
            return StoreUnavailable("redis: the dataset was replaced (flushed or restarted empty)")
        return StoreUnavailable(f"redis: {error}")

    def fence(self, name: str, value: str) -> None:
        """Refuse this store's writes unless lease ``name`` holds ``value``
        (checked by the write scripts, so a writer that lost its lease cannot write)."""
        self._lease_key, self._token = self._keys.lease(name), value

    async def put_quotes(self, quotes: Sequence[Quote]) -> None:
        if not quotes:
            return
        calls = [
            (
                [
                    *self._guard_keys(quote.symbol),
                    self._keys.quote(quote.symbol),
                    self._keys.prices(quote.symbol),
                ],
                [
                    self.epoch,
                    self._token,
                    _encode_quote(quote),
                    self._quote_ttl_ms,
                    self._ticks_kept,
                ],
            )
            for quote in quotes
        ]
        with _translated():
            try:
                await self._run(self._quote, calls)
            except ResponseError as error:
                symbols = list(dict.fromkeys(q.symbol for q in quotes))
                raise await self._refused(error, symbols) from error

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> str | None:
        """Take lease ``name`` if nobody holds it: the holder's value (its
        fencing token first), or None."""
        key = self._keys.lease(name)
        with _translated():
            token = int(
                await self._acquire(
                    keys=[key, self._keys.fence(name)], args=[max(1, round(ttl * 1000)), owner]
                )
            )
        return f"{token}:{owner}" if token else None

    async def renew_lease(self, name: str, value: str, ttl: float) -> bool:
        """Extend the lease for ``ttl`` seconds (0 releases it); False when it was lost."""
        with _translated():
            held = await self._renew(
                keys=[self._keys.lease(name)], args=[value, max(0, round(ttl * 1000))]
            )
        return bool(held)

    async def lease_holder(self, name: str) -> str | None:
        with _translated():
            raw = _bytes(await self._redis.get(self._keys.lease(name)))
        return None if raw is None else raw.decode()

    async def wait_for_updates(
        self,
        series: Sequence[SeriesKey],
        after: Position,
        prices: dict[str, bytes],
        block: float,
    ) -> list[tuple[str, Quote]]:
        """Block up to ``block`` seconds until a log of ``series`` has an update
        after ``after`` or a price stream of ``prices`` (symbol -> last entry
        id, updated here) has a new quote; return the new quotes. On a
        cluster, every stream must be of one symbol (one slot)."""
        streams: dict[Any, Any] = {}
        for key in series:
            streams[self._series(key).log] = f"{min(max(after.get(key.symbol, 0), 0), _MAX_ID)}-0"
        by_key: dict[bytes, str] = {}
        for symbol, last in prices.items():
            name = self._keys.prices(symbol)
            streams[name] = last
            by_key[name.encode()] = symbol
        with _translated():
            reply: Any = await self._redis.xread(
                streams, count=256, block=max(1, round(block * 1000))
            )
        quotes: list[tuple[str, Quote]] = []
        for name, entries in reply or ():
            owner = by_key.get(name)
            if owner is None or not entries:
                continue
            prices[owner] = entries[-1][0]
            quotes.extend((owner, _decode_quote(owner, f[b"q"])) for _, f in entries)
        return quotes

    async def price_positions(self, symbols: Sequence[str]) -> dict[str, bytes]:
        """The last entry id of each symbol's price stream ('0-0' when empty)."""
        with _translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                for symbol in symbols:
                    pipe.xrevrange(self._keys.prices(symbol), count=1)
                found = await pipe.execute()
        return {s: e[0][0] if e else b"0-0" for s, e in zip(symbols, found, strict=True)}

    async def recent_ticks(self, symbol: str, limit: int) -> list[Quote]:
        if limit <= 0:
            return []
        with _translated():
            entries = await self._redis.xrevrange(self._keys.prices(symbol), count=limit)
        quotes = []
        for _, fields in reversed(entries or []):
            raw = _bytes((fields or {}).get(b"q"))
            if raw is not None:
                quotes.append(_decode_quote(symbol, raw))
        return quotes

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        if not symbols:
            return []
        with _translated():
            raws = [_bytes(raw) for raw in await self._mget([self._keys.quote(s) for s in symbols])]
        return [
            None if raw is None else _decode_quote(symbol, raw)
            for symbol, raw in zip(symbols, raws, strict=True)
        ]

    async def head(self, symbols: Sequence[str]) -> dict[str, int]:
        if not symbols:
            return {}
        with _translated():
            mark = self._mark()
            raws = await self._mget([self._keys.seq(s) for s in symbols])
            heads = {s: int(raw or 0) for s, raw in zip(symbols, raws, strict=True)}
            await self._check_heads(heads, mark)
        return heads

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        if not candles:
            return []
        with _translated():
            if len(candles) > self._retention:
                candles = await self._drop_doomed(candles)
            # Runs of one series, in order: (series, [(candle, member)]).
            runs: list[tuple[SeriesKey, list[tuple[Candle, bytes]]]] = []
            for candle in candles:
                if not runs or runs[-1][0] != candle.series:
                    runs.append((candle.series, []))
                runs[-1][1].append((candle, _member(candle, candle_frame(candle))))
            calls = list(self._write_calls(runs))
            mark = self._mark()
            try:
                results = await self._run_writes(calls)
            except ResponseError as error:
                symbols = list(dict.fromkeys(c.symbol for c in candles))
                raise await self._refused(error, symbols) from error
        epoch, before = mark
        reused = [
            (batch[0][0].symbol, first - 1, before[batch[0][0].symbol])
            for (_, _, batch), (first, _) in zip(calls, results, strict=True)
            if first <= before.get(batch[0][0].symbol, 0)
        ]
        if reused and epoch is not None and epoch == self._epoch:
            # Numbers given before: the dataset was rolled back.
            with _translated():
                await self._rolled_back(epoch, reused)
            raise StoreUnavailable("redis: the dataset was rolled back; it is a new dataset")
        # Numbers of this epoch only (a write refused for another raised above).
        seen = self._seen
        applied: list[Update] = []
        for (_, _, batch), (first, indices) in zip(calls, results, strict=True):
            for seq, index in enumerate(indices, start=first):
                series, candle, member = batch[index - 1]
                applied.append(
                    Update(
                        seq, series, candle.open_time, candle.revision, candle.closed, member[13:]
                    )
                )
                if seq > seen.get(series.symbol, 0):
                    seen[series.symbol] = seq
        return applied

    async def _run_writes(
        self, calls: Sequence[tuple[list[str], list[Any], list[tuple[SeriesKey, Candle, bytes]]]]
    ) -> list[Any]:
        """The write script calls' results, in call order. On a cluster the
        symbols are written concurrently, each symbol's calls in order."""
        head = [self.epoch, self._token]
        if not self.cluster or len(calls) == 1:
            return await self._run(self._write, [(keys, head + args) for keys, args, _ in calls])
        by_symbol: dict[str, list[int]] = {}
        for i, (_, _, batch) in enumerate(calls):
            by_symbol.setdefault(batch[0][0].symbol, []).append(i)
        results: list[Any] = [None] * len(calls)

        async def write(indices: list[int]) -> None:
            for i in indices:
                keys, args, _ = calls[i]
                results[i] = await self._write(keys=keys, args=head + args)

        await _gathered([write(indices) for indices in by_symbol.values()])
        return results

    def _write_calls(
        self, runs: Sequence[tuple[SeriesKey, list[tuple[Candle, bytes]]]]
    ) -> Iterator[tuple[list[str], list[Any], list[tuple[SeriesKey, Candle, bytes]]]]:
        """Script calls of one symbol and at most about ``_CHUNK`` candles each."""
        head_args = [self._retention, self._log_size]
        symbol: str | None = None
        keys: list[str] = []
        args: list[Any] = []
        batch: list[tuple[SeriesKey, Candle, bytes]] = []
        for series, run in runs:
            if series.symbol != symbol:
                if batch:
                    yield keys, args, batch
                symbol = series.symbol
                keys = [*self._guard_keys(symbol), self._keys.seq(symbol)]
                args = list(head_args)
                batch = []
            for lo in range(0, len(run), _CHUNK):
                part = run[lo : lo + _CHUNK]
                names = self._series(series)
                keys += (names.candles, names.log, names.meta)
                args.append(len(part))
                args += [member for _, member in part]
                batch += [(series, candle, member) for candle, member in part]
                if len(batch) >= _CHUNK:
                    yield keys, args, batch
                    keys = [*self._guard_keys(symbol), self._keys.seq(symbol)]
                    args = list(head_args)
                    batch = []
        if batch:
            yield keys, args, batch

    async def _drop_doomed(self, candles: Sequence[Candle]) -> Sequence[Candle]:
        """For a batch larger than the retention (a backfill), skip candles that
        would be evicted by the end of the batch, as the memory store does."""
        times: dict[SeriesKey, set[int]] = {}
        for candle in candles:
            times.setdefault(candle.series, set()).add(candle.open_time)
        series = list(times)
        stored: list[bytes] = await self._run(
            self._times, [([self._series(key).candles], []) for key in series]
        )
        cutoffs: dict[SeriesKey, int] = {}
        for key, raw in zip(series, stored, strict=True):
            new = times[key]
            new.update(k - _OFFSET for k in struct.unpack(f">{len(raw) // 8}Q", raw))
            if len(new) > self._retention:
                cutoffs[key] = sorted(new)[-self._retention]
        if not cutoffs:
            return candles
        return [c for c in candles if c.open_time >= cutoffs.get(c.series, c.open_time)]

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        if limit <= 0:
            return CandleSlice((), ())
        low = b"-" if start is None else b"[" + _key(start)
        high = b"+" if end is None or end >= _OFFSET else b"(" + _key(end)
        with _translated():
            packed = await self._range(
                keys=[self._series(series).candles],
                args=[1 if start is not None else 0, low, high, limit],
            )
        times, frames, _ = _unpack(packed)
        return CandleSlice(times, frames)

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        updates, _ = await self._read_updates(series, after, bounds=False)
        return updates

    async def follow_updates(
        self, series: Sequence[SeriesKey], after: Position
    ) -> tuple[list[Update], dict[SeriesKey, Bounds]]:
        """:meth:`read_updates`, with each series' :data:`Bounds` as they are
        after the last update returned (read in the same script)."""
        return await self._read_updates(series, after, bounds=True)

    async def _read_updates(
        self, series: Sequence[SeriesKey], after: Position, *, bounds: bool
    ) -> tuple[list[Update], dict[SeriesKey, Bounds]]:
        groups = _by_symbol(series)
        calls = []
        for symbol, keys in groups.items():
            first = f"{min(max(after.get(symbol, 0) + 1, 0), _MAX_ID)}-0"
            names: list[str] = [self._keys.seq(symbol)]
            for key in keys:
                names.append(self._series(key).log)
                if bounds:
                    names.append(self._series(key).candles)
            calls.append((names, [first]))
        with _translated():
            mark = self._mark()
            results = await self._run(self._follow if bounds else self._updates, calls)
        updates: list[Update] = []
        found: dict[SeriesKey, Bounds] = {}
        heads = {symbol: int(head) for symbol, (head, *_) in zip(groups, results, strict=True)}
        with _translated():
            if await self._check_heads(heads, mark):
                raise DataExpired("the store's data was rolled back; start afresh")
        for (symbol, keys), (head, *logs) in zip(groups.items(), results, strict=True):
            position = after.get(symbol, 0)
            if position > int(head):
                raise DataExpired(f"{symbol} has no position {position}: its data was replaced")
            runs: list[list[Update]] = []
            for key, (trimmed, ids, members, *extent) in zip(keys, logs, strict=True):
                if int(trimmed) > position:
                    raise DataExpired(
                        f"updates of {key} after position {position} are no longer retained"
                    )
                run = []
                for entry_id, member in zip(ids, members, strict=True):
                    seq, open_time, revision, closed, frame = _entry(entry_id, member)
                    run.append(Update(seq, key, open_time, revision, bool(closed), frame))
                runs.append(run)
                if extent:
                    count, oldest = extent
                    found[key] = (
                        int(count),
                        _KEY.unpack(oldest)[0] - _OFFSET if oldest else None,
                    )
            updates += runs[0] if len(runs) == 1 else heapq.merge(*runs, key=_by_seq)
        return updates, found

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: Position | None = None,
    ) -> Snapshot:
        groups = _by_symbol(series)
        bound = b"" if start is None else b"[" + _key(start)
        calls = []
        for symbol, group in groups.items():
            keys = [self._keys.seq(symbol)]
            for key in group:
                names = self._series(key)
                keys += (names.candles, names.log, names.meta)
            wanted = -1 if at is None else min(at.get(symbol, 0), _MAX_ID)
            calls.append((keys, [wanted, history, bound, int(closed_only)]))
        with _translated():
            mark = self._mark()
            results = await self._run(self._snapshot, calls)
        heads = {symbol: int(result[1]) for symbol, result in zip(groups, results, strict=True)}
        with _translated():
            if await self._check_heads(heads, mark):
                raise DataExpired("the store's data was rolled back; start afresh")
        position: dict[str, int] = {}
        found: dict[SeriesKey, CandleSlice] = {}
        for (symbol, group), result in zip(groups.items(), results, strict=True):
            seq = position[symbol] = int(result[0])
            if at is not None and at.get(symbol, 0) > int(result[1]):
                raise DataExpired(f"{symbol} has no position {at[symbol]}: its data was replaced")
            for key, raw in zip(group, result[2:], strict=True):
                found[key] = self._slice(
                    key, raw, history=history, start=start, closed_only=closed_only, at=seq
                )
        return Snapshot(position, [found[key] for key in series])

    @staticmethod
    def _slice(
        key: SeriesKey,
        raw: Sequence[Any],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: int,
    ) -> CandleSlice:
        evicted, trimmed, count, first, rewind, packed, ids, entries = raw
        evicted_seq, trimmed_upto = int(evicted), int(trimmed)
        first_time = _KEY.unpack(first)[0] - _OFFSET if first else None
        times, frames, closed = _unpack(packed)
        if rewind:
            log = [_entry(i, m) for i, m in zip(ids, entries, strict=True)]
            return RedisStore._rewound_slice(
                key,
                times,
                frames,
                closed,
                log,
                evicted_seq=evicted_seq,
                trimmed_upto=trimmed_upto,
                first_time=first_time,
                history=history,
                start=start,
                closed_only=closed_only,
                at=at,
            )
        # The script picked the candles; only the expiry checks are left.
        if start is not None:
            if evicted_seq > at and (first_time is None or start < first_time):
                raise _expired(key, at)
            if closed_only:
                picked = [i for i, flag in enumerate(closed) if flag]
                return CandleSlice([times[i] for i in picked], [frames[i] for i in picked])
            return CandleSlice(times, frames)
        found = len(times) if closed_only else int(count)  # closed ones picked, or all
        if found < history and evicted_seq > at:
            raise _expired(key, at)
        return CandleSlice(times, frames)

    @staticmethod
    def _rewound_slice(
        key: SeriesKey,
        times: Sequence[int],
        frames: Sequence[bytes],
        closed: bytes,
        log: list[_Entry],
        *,
        evicted_seq: int,
        trimmed_upto: int,
        first_time: int | None,
        history: int,
        start: int | None,
        closed_only: bool,
        at: int,
    ) -> CandleSlice:
        rows: list[_Row] = list(zip(times, closed, frames, strict=True))
        rows = _rewind(key, rows, log, trimmed_upto, at)
        if start is not None:
            if evicted_seq > at and (first_time is None or start < first_time):
                raise _expired(key, at)
            rows = rows[bisect_left([r[0] for r in rows], start) :]
        if closed_only:
            rows = [r for r in rows if r[1]]
        if start is None:
            if len(rows) < history and evicted_seq > at:
                raise _expired(key, at)
            rows = rows[max(0, len(rows) - history) :] if history else []
        return CandleSlice([r[0] for r in rows], [r[2] for r in rows])

    # --- trades -------------------------------------------------------------------------

    async def write_trades(self, trades: Sequence[Trade]) -> list[TradeUpdate]:
        if not trades:
            return []
        by_symbol: dict[str, list[tuple[Trade, bytes]]] = {}
        for trade in trades:
            by_symbol.setdefault(trade.symbol, []).append((trade, trade_frame(trade)))
        window = self._trade_window
        calls = []
        for symbol, batch in by_symbol.items():
            args: list[Any] = [self.epoch, self._token, self._trade_retention]
            newest = max(trade.time for trade, _ in batch)
            args.append(b"" if window is None else _key(newest - window))
            for trade, frame in batch:
                args += (_key(trade.time), frame)
            keys = [
                *self._guard_keys(symbol),
                self._keys.trades(symbol),
                self._keys.trade_meta(symbol),
            ]
            calls.append((keys, args))
        with _translated():
            try:
                if self.cluster and len(calls) > 1:
                    results = await _gathered(
                        [self._trades_write(keys=k, args=a) for k, a in calls]
                    )
                else:
                    results = await self._run(self._trades_write, calls)
            except ResponseError as error:
                raise await self._refused(error, list(by_symbol)) from error
        out: list[TradeUpdate] = []
        for (symbol, batch), (first, previous) in zip(by_symbol.items(), results, strict=True):
            key = TradeSymbol(symbol)
            mark = _KEY.unpack(previous)[0] - _OFFSET if previous else None
            for seq, (trade, frame) in enumerate(batch, start=int(first)):
                if mark is None or trade.time > mark:
                    mark = trade.time
                out.append(TradeUpdate(seq, key, mark, frame))
        return out

    # --- what validation refused ---------------------------------------------------------

    async def add_rejections(self, added: Mapping[str, Mapping[int, tuple[int, int]]]) -> None:
        """Add counts of refused input: symbol -> reason -> (count to add,
        newest event time refused). One script call per symbol, pipelined."""
        calls: list[tuple[list[Any], list[Any]]] = []
        for symbol, reasons in added.items():
            args: list[Any] = []
            for reason, (count, last) in sorted(reasons.items()):
                args += [reason, count, last]
            if args:
                calls.append(([self._keys.rejections(symbol)], args))
        if calls:
            with _translated():
                await self._run(self._rejections, calls)

    async def rejection_counts(
        self, symbols: Sequence[str]
    ) -> dict[str, dict[int, tuple[int, int]]]:
        """symbol -> reason -> (count, newest event time refused), as stored."""
        if not symbols:
            return {}
        keys = [self._keys.rejections(s) for s in symbols]
        with _translated():
            if self.cluster:
                raws = await _gathered([self._redis.hgetall(k) for k in keys])
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.hgetall(k)
                    raws = await pipe.execute()
        out: dict[str, dict[int, tuple[int, int]]] = {}
        for symbol, raw in zip(symbols, raws, strict=True):
            fields = {
                k.decode() if isinstance(k, bytes) else str(k): int(v) for k, v in raw.items()
            }
            out[symbol] = {
                int(name): (count, fields.get(f"{name}:last", 0))
                for name, count in fields.items()
                if name.isdigit()
            }
        return out

    async def trade_heads(self, symbols: Sequence[str]) -> dict[str, int]:
        if not symbols:
            return {}
        with _translated():
            if self.cluster:
                raws = await _gathered(
                    [self._redis.hget(self._keys.trade_meta(s), "seq") for s in symbols]
                )
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for symbol in symbols:
                        pipe.hget(self._keys.trade_meta(symbol), "seq")
                    raws = await pipe.execute()
        return {s: int(raw or 0) for s, raw in zip(symbols, raws, strict=True)}

    async def _trade_range(
        self,
        symbol: str,
        *,
        start: int | None,
        end: int | None,
        after: int,
        upto: int | None,
        limit: int,
        latest: bool,
    ) -> tuple[int, int, bool, list[int], FrameRun]:
        """(head, first seq, complete, marks, frames) of a range script call."""
        args: list[Any] = [
            max(0, after),
            b"" if upto is None else upto,
            b"" if start is None else _key(start),
            b"" if end is None else _key(end),
            max(0, limit),
            1 if latest else 0,
        ]
        with _translated():
            head, first, complete, marks, lengths, frames = await self._trades_range(
                keys=[self._keys.trades(symbol), self._keys.trade_meta(symbol)], args=args
            )
        n = len(marks) // 8
        times = [k - _OFFSET for k in struct.unpack(f">{n}Q", marks)]
        sizes = array("I", struct.unpack(f">{n}I", lengths))
        return int(head), int(first), bool(complete), times, FrameRun(frames, sizes)

    async def get_trades(
        self,
        symbol: str,
        *,
        start: int | None = None,
        end: int | None = None,
        after: int = 0,
        upto: int | None = None,
        limit: int,
        latest: bool = False,
    ) -> TradeSlice:
        _, first, complete, marks, frames = await self._trade_range(
            symbol, start=start, end=end, after=after, upto=upto, limit=limit, latest=latest
        )
        return TradeSlice(range(first, first + len(marks)), frames, complete)

    async def read_trades(self, symbols: Sequence[str], after: Position) -> list[TradeUpdate]:
        out: list[TradeUpdate] = []
        for symbol in symbols:
            seq = after.get(symbol, 0)
            head, first, complete, marks, frames = await self._trade_range(
                symbol, start=None, end=None, after=seq, upto=None, limit=1 << 30, latest=False
            )
            if seq > head:
                raise DataExpired(f"{symbol} has no trade {seq}: its data was replaced")
            if not complete:
                raise DataExpired(f"trades of {symbol} after {seq} are no longer retained")
            key = TradeSymbol(symbol)
            out.extend(
                TradeUpdate(first + i, key, mark, frame)
                for i, (mark, frame) in enumerate(zip(marks, frames, strict=True))
            )
        return out

    async def wait_for_trades(self, symbols: Sequence[str], after: Position, block: float) -> None:
        """Block up to ``block`` seconds until a trade stream of ``symbols`` has
        a trade after ``after`` (on a cluster, ``symbols`` must be one)."""
        streams: dict[Any, Any] = {
            self._keys.trades(s): f"{min(max(after.get(s, 0), 0), _MAX_ID)}-0" for s in symbols
        }
        with _translated():
            await self._redis.xread(streams, count=1, block=max(1, round(block * 1000)))


def _by_symbol(series: Sequence[SeriesKey]) -> dict[str, list[SeriesKey]]:
    """``series`` grouped by symbol, in order of first appearance."""
    groups: dict[str, list[SeriesKey]] = {}
    for key in series:
        groups.setdefault(key.symbol, []).append(key)
    return groups


def _rewind(
    key: SeriesKey, rows: list[_Row], log: list[_Entry], trimmed_upto: int, at: int
) -> list[_Row]:
    """Replace candles changed after ``at`` by their version at ``at``
    (the memory store's ``_rewind``, on a log read from the stream)."""
    if trimmed_upto > at:
        raise _expired(key, at)
    cut = bisect_left([e[0] for e in log], at + 1)
    first_after: dict[int, int] = {}  # open_time -> first revision written after `at`
    for entry in log[cut:]:
        first_after.setdefault(entry[1], entry[2])
    previous: dict[int, tuple[int, bytes]] = {}  # open_time -> (closed, frame) at `at`
    wanted = {t: r - 1 for t, r in first_after.items() if r > 0}
    for entry in reversed(log[:cut]):
        if not wanted:
            break
        _, open_time, revision, closed, frame = entry
        if wanted.get(open_time) == revision:
            previous[open_time] = (closed, frame)
            del wanted[open_time]
    if wanted:
        raise _expired(key, at)
    rewound: list[_Row] = []
    for row in rows:
        changed = first_after.get(row[0])
        if changed is None:
            rewound.append(row)
        elif changed > 0:
            closed, frame = previous[row[0]]
            rewound.append((row[0], closed, frame))
    return rewound
