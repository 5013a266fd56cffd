"""The history store on PostgreSQL: writes with psycopg 3, reads with asyncpg.

Candles are stored in blocks (:mod:`candlewire.history.blocks`): one row per
series and span (an hour of 1m candles, a minute of 1s candles ...) with the
open times, revisions and frame lengths packed and the frames, encoded once
at write time, back to back. A read of 1,000 candles is about 20 rows, cut
with ``bisect`` and handed on as one :class:`~candlewire.codec.FrameRun`,
without a Python object per candle; a stored candle costs its frame plus
about 20 bytes.

A write merges into the blocks it touches under a transaction-level advisory
lock per series, so the newest revision of each candle wins whatever the
order batches arrive in and whoever writes them (the archiver, an import, a
backfill). An archive checkpoint can be saved in the same transaction as
the rows it covers. Bulk loads into a range that holds nothing yet are
copied straight in (binary ``COPY``).

Reads go through asyncpg: a read of 1,000 candles is one prepared statement
returning about 20 rows of ``bytea`` in the binary protocol, and asyncpg
does that for about 0.12 ms of the service's CPU where psycopg's asyncio
path takes about 0.3 ms (``bench/history.py``). Writes keep psycopg for its
binary ``COPY``, transactions and pipeline.

Every PostgreSQL failure while running becomes
:class:`~candlewire.errors.HistoryUnavailable`; failures at :meth:`connect`
(a bad URL, a refused password, an unknown database, nobody listening) are a
:class:`~candlewire.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import psycopg
import psycopg_pool
from psycopg import AsyncConnection

from candlewire.codec import FrameRun
from candlewire.domain import Interval, SeriesKey
from candlewire.errors import ConfigError, HistoryUnavailable
from candlewire.history.blocks import (
    BLOCK_CAPACITY,
    Block,
    block_of,
    decode_blocks,
    encode_blocks,
    unpack,
)
from candlewire.history.options import redact_url, scrub
from candlewire.history.schema import (
    LOCK_KEY,
    Period,
    TradePeriod,
    apply_migrations,
    period_of,
    schema_version,
    trade_period,
)
from candlewire.intervals import bucket_end, fixed_length
from candlewire.store.base import CandleSlice

__all__ = [
    "HistoryRow",
    "HistoryStore",
    "TradeRow",
    "TradeRun",
    "gaps",
    "group_rows",
    "redact_url",
    "rows_from_candles",
]

log = logging.getLogger(__name__)


class _OneLinePerOutage(logging.Filter):
    """asyncpg's pool logs a WARNING with a traceback each time it fails to
    restore its connection floor (every retry, while PostgreSQL is away).
    The outage is reported already (readiness, ``candlewire.history`` health,
    our own WARNING); this keeps the first line of each such record, without
    the traceback, at most once a minute."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self._every = every
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None:
            return True
        now = time.monotonic()
        if now - self._last < self._every:
            return False
        self._last = now
        error = record.exc_info[1]
        record.msg = f"{record.getMessage()}: {str(error) or type(error).__name__}"
        record.args = None
        record.exc_info = record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_OneLinePerOutage())

_NO_START = -(2**63)
_NO_END = 2**63 - 1


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One closed candle as the history tier stores it."""

    symbol: str
    interval: Interval
    open_time: int
    revision: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One trade as the history tier stores it: the hot store's epoch and
    trade sequence number name it, ``mark`` places it in time."""

    symbol: str
    epoch: bytes
    seq: int
    mark: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class TradeRun:
    """Trades read from history, in the order received: each one's cursor
    (see :meth:`HistoryStore.trades_after`) and frame."""

    cursors: list[int]
    frames: Sequence[bytes]

    def __len__(self) -> int:
        return len(self.cursors)


SEQ_BITS = 40
"""A trade's position is ``epoch id << SEQ_BITS | sequence number``."""
_SEQ_MASK = (1 << SEQ_BITS) - 1
OLDER = 1 << 62
"""Cursors of trades of older epochs are ``position - OLDER`` (negative)."""
BEGIN = -OLDER
"""The cursor before every trade."""


def rows_from_candles(candles: Iterable[Any]) -> list[HistoryRow]:
    """Rows of closed candles (``Candle`` or ``Update``-like objects with a frame)."""
    from candlewire.codec import candle_frame

    rows: list[HistoryRow] = []
    for candle in candles:
        if not candle.closed:
            continue
        rows.append(
            HistoryRow(
                candle.symbol,
                candle.interval,
                candle.open_time,
                candle.revision,
                candle_frame(candle),
            )
        )
    return rows


_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS candle_stage ("
    ' symbol text COLLATE "C", interval smallint, block_start bigint, count integer,'
    " times bytea, revisions bytea, lengths bytea, frames bytea) ON COMMIT DELETE ROWS"
)
_UPSERT = (
    "INSERT INTO candles SELECT * FROM candle_stage "
    "ON CONFLICT (symbol, interval, block_start) DO UPDATE SET count = EXCLUDED.count,"
    " times = EXCLUDED.times, revisions = EXCLUDED.revisions, lengths = EXCLUDED.lengths,"
    " frames = EXCLUDED.frames"
)
_TRADE_STAGE = (
    'CREATE TEMP TABLE IF NOT EXISTS trade_stage (symbol text COLLATE "C", pos bigint,'
    " mark bigint, frame bytea) ON COMMIT DELETE ROWS"
)
_TRADE_INSERT = "INSERT INTO trades SELECT * FROM trade_stage ON CONFLICT DO NOTHING"
_TRADE_CHECKPOINT = (
    "INSERT INTO trade_checkpoints (symbol, epoch, seq) VALUES (%s, %s, %s) "
    "ON CONFLICT (symbol) DO UPDATE SET epoch = EXCLUDED.epoch, seq = EXCLUDED.seq, "
    "updated_at = now()"
)
# Trade reads: $2 is the hot store's epoch, whose id (if it has one yet) turns
# current-epoch sequence numbers into positions; read in the same statement as
# the rows, so an epoch numbered meanwhile cannot slip a trade past the seam.
_EPOCH_ID = "(SELECT id FROM trade_epochs WHERE epoch = $2)::int8"
_MAX = "9223372036854775807"
_TRADES_FORWARD = (
    f"SELECT pos, frame, {_EPOCH_ID} FROM trades WHERE symbol = $1"
    f" AND pos > CASE WHEN $3::int8 >= 0 THEN coalesce(({_EPOCH_ID} << {SEQ_BITS}) + $3::int8,"
    f" {_MAX}) ELSE $3::int8 + {OLDER} END"
    f" AND pos < coalesce(({_EPOCH_ID} << {SEQ_BITS}) + $4::int8, {_MAX})"
    " AND mark >= $5 AND mark < $6 ORDER BY pos LIMIT $7"
)
# The first read from `start` also seeks each epoch's first trade with a mark
# at or after it (trades_epoch_mark): the scan by position starts there.
_TRADES_FIRST = _TRADES_FORWARD.replace(
    " ORDER BY pos LIMIT $7",
    f" AND pos >= coalesce((SELECT min(f.pos) FROM trade_epochs e CROSS JOIN LATERAL"
    f" (SELECT pos FROM trades WHERE symbol = $1 AND (pos >> {SEQ_BITS}) = e.id"
    f" AND mark >= $5 ORDER BY mark, pos LIMIT 1) AS f), {_MAX}) ORDER BY pos LIMIT $7",
)
_TRADES_BACKWARD = (
    f"SELECT pos, frame, {_EPOCH_ID} FROM trades WHERE symbol = $1"
    f" AND pos < coalesce(({_EPOCH_ID} << {SEQ_BITS}) + $3::int8, {_MAX})"
    " AND mark < $4 ORDER BY pos DESC LIMIT $5"
)
_CHECKPOINT = (
    "INSERT INTO archive_checkpoints (symbol, epoch, seq) VALUES (%s, %s, %s) "
    "ON CONFLICT (symbol) DO UPDATE SET epoch = EXCLUDED.epoch, seq = EXCLUDED.seq, "
    "updated_at = now()"
)
# Reads (asyncpg: $n parameters)
_FORWARD = (
    "SELECT block_start, times, lengths, frames FROM candles WHERE symbol = $1"
    " AND interval = $2::int2 AND block_start >= $3 AND block_start < $4"
    " ORDER BY block_start LIMIT $5"
)
_BACKWARD = (
    "SELECT block_start, times, lengths, frames FROM candles WHERE symbol = $1"
    " AND interval = $2::int2 AND block_start < $3 ORDER BY block_start DESC LIMIT $4"
)
_READ_TIMES = (
    "SELECT block_start, times FROM candles WHERE symbol = $1 AND interval = $2::int2"
    " AND block_start >= $3 AND block_start < $4 ORDER BY block_start"
)
_EARLIEST = (
    "SELECT u.i, c.times FROM unnest($1::text[], $2::int2[]) WITH ORDINALITY AS u(s, v, i)"
    ' CROSS JOIN LATERAL (SELECT times FROM candles WHERE symbol = u.s COLLATE "C"'
    " AND interval = u.v AND count > 0 ORDER BY block_start LIMIT 1) AS c"
)
# Writes (psycopg: %s parameters)
_TIMES = (
    "SELECT block_start, times FROM candles WHERE symbol = %s AND interval = %s::int2"
    " AND block_start >= %s AND block_start < %s ORDER BY block_start"
)
_EXISTING = (
    "SELECT symbol, block_start, times, revisions, lengths, frames FROM candles"
    " WHERE interval = %s::int2 AND symbol = ANY(%s) AND block_start = ANY(%s)"
)
_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout)
# asyncpg: the connection lost or refused, the server shutting down, starting up
# or out of connections, no connection free in time.
_READ_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    OSError,
    TimeoutError,
)

BlockKey = tuple[str, int, int]
"""(symbol, interval, block start)"""


def group_rows(rows: Iterable[HistoryRow]) -> dict[BlockKey, dict[int, tuple[int, bytes]]]:
    """Rows by block; of several versions of a candle the newest revision."""
    groups: dict[BlockKey, dict[int, tuple[int, bytes]]] = {}
    for row in rows:
        key = (row.symbol, int(row.interval), block_of(row.interval, row.open_time))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {}
        found = group.get(row.open_time)
        if found is None or found[0] < row.revision:
            group[row.open_time] = (row.revision, row.frame)
    return groups


async def _stage(conn: AsyncConnection[Any]) -> None:
    await conn.execute(_STAGE)
    await conn.execute(_TRADE_STAGE)
    await conn.commit()


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"


def _trade_copy(rows: Iterable[tuple[bytes, int, int, bytes]]) -> bytes:
    """(symbol, position, mark, frame) rows in binary COPY format."""
    parts = [_COPY_HEADER]
    pack = _TRADE_TUPLE.pack
    for symbol, pos, mark, frame in rows:
        parts.append(_FIELDS4 + len(symbol).to_bytes(4, "big") + symbol)
        parts.append(pack(8, pos, 8, mark, len(frame)))
        parts.append(frame)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


_FIELDS4 = (4).to_bytes(2, "big")
_TRADE_TUPLE = struct.Struct(">iqiqi")


# Reads are prepared statements over partitioned tables: a custom plan would
# be planned again at every call (about a millisecond with the partitions of
# a year), a generic one prunes partitions when it runs.
_READ_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


class HistoryStore:
    """Closed candles of every served interval in PostgreSQL.

    ``retention`` maps intervals to the nanoseconds of history kept (missing:
    kept forever); :meth:`apply_retention` drops the time partitions wholly
    older than that.
    """

    def __init__(
        self,
        url: str,
        *,
        read_url: str = "",
        retention: Mapping[Interval, int] | None = None,
        trade_retention: int | None = None,
        pool_size: int = 4,
        timeout: float = 5.0,
        setting: str = "postgres_url",
    ) -> None:
        self._url = url
        self._read_url = read_url or url
        self.retention: dict[Interval, int] = dict(retention or {})
        self.trade_retention = trade_retention
        """Nanoseconds of trades kept (None: forever)."""
        self._trade_partitions: set[str] = set()
        self._epoch_ids: dict[bytes, int] = {}
        self._pool_size = pool_size
        self._timeout = timeout
        self._setting = setting
        self._writer: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._reader: asyncpg.Pool[asyncpg.Record] | None = None
        self._partitions: set[str] = set()
        self._last_period: dict[Interval, Period] = {}

    @property
    def redacted_url(self) -> str:
        return redact_url(self._url)

    # -- lifecycle ---------------------------------------------------------

    async def _connect_once(self, url: str, setting: str) -> AsyncConnection[Any]:
        env = "CANDLEWIRE_" + setting.upper()
        flag = "--" + setting.replace("_", "-")
        try:
            return await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=max(1, int(self._timeout))
            )
        except (psycopg.Error, ValueError) as error:
            reason = scrub(str(error).strip().splitlines()[-1] if str(error) else "", url)
            raise ConfigError(
                f"{setting} ({flag} / {env}): cannot connect to PostgreSQL at "
                f"{redact_url(url)}: {reason or type(error).__name__}"
            ) from None

    async def upgrade(self) -> list[int]:
        """Apply pending migrations (idempotent; safe from several processes at once)."""
        conn = await self._connect_once(self._url, self._setting)
        try:
            applied = await apply_migrations(conn)
        except psycopg.Error as error:
            raise HistoryUnavailable(f"migrations failed: {scrub(str(error), self._url)}") from None
        finally:
            await conn.close()
        for version in applied:
            log.info("history schema: applied migration %d", version)
        return applied

    async def version(self) -> int:
        conn = await self._connect_once(self._read_url, "postgres_read_url")
        try:
            return await schema_version(conn)
        finally:
            await conn.close()

    async def connect(self) -> None:
        """Migrate, then open the connection pools (raises ConfigError when the
        database cannot be used at all)."""
        await self.upgrade()
        if self._read_url != self._url:
            conn = await self._connect_once(self._read_url, "postgres_read_url")
            await conn.close()
        self._writer = psycopg_pool.AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=2,
            open=False,
            timeout=self._timeout,
            configure=_stage,
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            name="history-writer",
        )
        try:
            await self._writer.open(wait=True, timeout=self._timeout)
        except psycopg_pool.PoolTimeout:
            await self.close()
            raise ConfigError(
                f"{self._setting}: PostgreSQL at {self.redacted_url} did not accept connections"
            ) from None
        read_setting = "postgres_read_url" if self._read_url != self._url else self._setting
        try:
            # Outside a transaction (asyncpg's default): a read is one round
            # trip. A read that finds its connection broken retries once (_rows).
            self._reader = await asyncpg.create_pool(
                self._read_url,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                server_settings=_READ_SETTINGS,
            )
        except (*_READ_ERRORS, asyncpg.PostgresError, ValueError) as error:
            await self.close()
            reason = scrub(
                str(error).strip().splitlines()[-1] if str(error) else "", self._read_url
            )
            raise ConfigError(
                f"{read_setting}: cannot read from PostgreSQL at {redact_url(self._read_url)}: "
                f"{reason or type(error).__name__}"
            ) from None
        await self._load_partitions()

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if writer is not None:
            await writer.close()
        if reader is not None:
            try:
                await asyncio.wait_for(reader.close(), self._timeout)
            except TimeoutError:
                reader.terminate()

    def _write_pool(self) -> psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]]:
        if self._writer is None:
            raise HistoryUnavailable("the history store is not connected")
        return self._writer

    def _read_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._reader is None:
            raise HistoryUnavailable("the history store is not connected")
        return self._reader

    async def ping(self) -> None:
        await self._rows("SELECT 1", ())

    def _describe(self, error: BaseException) -> str:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return "PostgreSQL: " + scrub(text, self._url)

    # -- partitions --------------------------------------------------------

    async def _load_partitions(self) -> None:
        rows = await self._rows("SELECT name FROM candle_partitions", ())
        self._partitions = {row[0] for row in rows}
        rows = await self._rows("SELECT name FROM trade_partitions WHERE NOT dropped", ())
        self._trade_partitions = {row[0] for row in rows}

    def _needed(self, keys: Iterable[BlockKey]) -> dict[str, Period]:
        needed: dict[str, Period] = {}
        last = self._last_period
        for _, code, start in keys:
            interval = Interval(code)
            period = last.get(interval)
            if period is None or not period.lower <= start < period.upper:
                period = last[interval] = period_of(interval, start)
            if period.name not in self._partitions:
                needed[period.name] = period
        return needed

    async def _create_partitions(
        self, conn: AsyncConnection[Any], periods: Iterable[Period]
    ) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        for period in periods:
            parent = f"candles_{period.interval.name.lower()}"
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {period.name} PARTITION OF {parent} "
                f"FOR VALUES FROM ({period.lower}) TO ({period.upper}) "
                "WITH (toast_tuple_target = 8160)".encode()
            )
            await conn.execute(
                "INSERT INTO candle_partitions (name, interval, lower_bound, upper_bound) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (period.name, period.interval.value, period.lower, period.upper),
            )

    # -- writes ------------------------------------------------------------

    @staticmethod
    async def _lock(conn: AsyncConnection[Any], keys: Iterable[BlockKey]) -> None:
        """Serialise writers of the same series until the transaction ends."""
        series = sorted({(k[0], k[1]) for k in keys})
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(hashtext(s), i)) FROM"
            " (SELECT * FROM unnest(%s::text[], %s::int4[]) AS u(s, i) ORDER BY s, i) AS t",
            ([s for s, _ in series], [i for _, i in series]),
        )

    @staticmethod
    async def _existing(
        conn: AsyncConnection[Any], keys: Iterable[BlockKey]
    ) -> dict[BlockKey, Block]:
        by_interval: dict[int, tuple[set[str], set[int]]] = {}
        wanted = set(keys)
        for symbol, code, start in wanted:
            symbols, starts = by_interval.setdefault(code, (set(), set()))
            symbols.add(symbol)
            starts.add(start)
        found: dict[BlockKey, Block] = {}
        for code, (symbols, starts) in by_interval.items():
            cur = await conn.execute(
                _EXISTING, (code, sorted(symbols), sorted(starts)), binary=True
            )
            for symbol, start, times, revisions, lengths, frames in await cur.fetchall():
                key = (symbol, code, int(start))
                if key in wanted:
                    found[key] = Block.decode(times, revisions, lengths, frames)
        return found

    async def _merge(
        self, conn: AsyncConnection[Any], groups: Mapping[BlockKey, Mapping[int, tuple[int, bytes]]]
    ) -> None:
        """Merge ``groups`` into the stored blocks (the series are locked)."""
        existing = await self._existing(conn, groups)
        out: list[tuple[str, int, int, Block]] = []
        for key, new in groups.items():
            merged = existing.get(key, _EMPTY).merged(new)
            if merged is not None:
                out.append((*key, merged))
        if out:
            async with conn.cursor().copy("COPY candle_stage FROM STDIN (FORMAT BINARY)") as copy:
                await copy.write(encode_blocks(out))
            await conn.execute(_UPSERT)

    async def write(
        self,
        rows: Sequence[HistoryRow],
        checkpoints: Mapping[str, tuple[bytes, int]] | None = None,
    ) -> None:
        """Upsert ``rows`` (newest revision wins) and save ``checkpoints``
        (symbol -> (epoch, sequence number)) in the same transaction."""
        if not rows and not checkpoints:
            return
        groups = group_rows(rows)
        needed = self._needed(groups)
        try:
            async with self._write_pool().connection() as conn, conn.transaction():
                if needed:
                    await self._create_partitions(conn, needed.values())
                if groups:
                    await self._lock(conn, groups)
                    await self._merge(conn, groups)
                for symbol, (epoch, seq) in (checkpoints or {}).items():
                    await conn.execute(_CHECKPOINT, (symbol, epoch, seq))
        except _ERRORS as e:
            self._last_period.clear()
            raise HistoryUnavailable(self._describe(e)) from None
        self._partitions.update(needed)

    async def write_blocks(self, data: bytes) -> None:
        """Load blocks already in binary COPY format (:func:`encode_blocks`, one
        per block key), in one transaction: copied straight in where none of
        their keys is stored yet, else merged as by :meth:`write`."""
        blocks = decode_blocks(data)
        if not blocks:
            return
        keys = [(symbol, code, start) for symbol, code, start, _ in blocks]
        needed = self._needed(keys)
        try:
            async with self._write_pool().connection() as conn, conn.transaction():
                if needed:
                    await self._create_partitions(conn, needed.values())
                await self._lock(conn, keys)
                if await self._existing(conn, keys):
                    groups = {
                        key: {t: (r, f) for t, r, f in block.entries()}
                        for key, (*_, block) in zip(keys, blocks, strict=True)
                    }
                    await self._merge(conn, groups)
                else:
                    async with conn.cursor().copy(
                        "COPY candles FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        await copy.write(data)
        except _ERRORS as e:
            self._last_period.clear()
            raise HistoryUnavailable(self._describe(e)) from None
        self._partitions.update(needed)

    async def delete(self, series: SeriesKey, start: int, end: int) -> int:
        """Forget the candles of ``series`` with ``start <= open_time < end``
        (an operator's tool, to load a range again); returns how many."""
        keys: list[BlockKey] = []
        removed = 0
        try:
            async with self._write_pool().connection() as conn, conn.transaction():
                code = int(series.interval)
                await self._lock(conn, [(series.symbol, code, 0)])
                cur = await conn.execute(
                    _TIMES,
                    (series.symbol, code, block_of(series.interval, start), end),
                    binary=True,
                )
                keys = [(series.symbol, code, int(row[0])) for row in await cur.fetchall()]
                existing = await self._existing(conn, keys)
                out = []
                for key in keys:
                    block = existing[key]
                    kept = {t: (r, f) for t, r, f in block.entries() if not start <= t < end}
                    removed += len(block.times) - len(kept)
                    if len(kept) < len(block.times):
                        await conn.execute(
                            "DELETE FROM candles WHERE symbol = %s AND interval = %s::int2"
                            " AND block_start = %s",
                            key[0:1] + key[1:],
                        )
                        if kept:
                            rebuilt = _EMPTY.merged(kept)
                            assert rebuilt is not None
                            out.append((*key, rebuilt))
                if out:
                    async with conn.cursor().copy(
                        "COPY candles FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        await copy.write(encode_blocks(out))
        except _ERRORS as e:
            raise HistoryUnavailable(self._describe(e)) from None
        return removed

    async def checkpoints(self) -> dict[str, tuple[bytes, int]]:
        """Symbol -> (epoch, sequence number) archived through."""
        try:
            async with self._write_pool().connection() as conn:
                cur = await conn.execute("SELECT symbol, epoch, seq FROM archive_checkpoints")
                rows = await cur.fetchall()
                await conn.rollback()
        except _ERRORS as e:
            raise HistoryUnavailable(self._describe(e)) from None
        return {row[0]: (bytes(row[1]), int(row[2])) for row in rows}

    async def apply_retention(self, now: int | None = None) -> list[str]:
        """Drop the time partitions older than each interval's retention."""
        now = time.time_ns() if now is None else now
        dropped: list[str] = []
        try:
            async with self._write_pool().connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                for interval, keep in self.retention.items():
                    cur = await conn.execute(
                        "SELECT name FROM candle_partitions WHERE interval = %s"
                        " AND upper_bound <= %s ORDER BY lower_bound",
                        (interval.value, now - keep),
                    )
                    for (name,) in await cur.fetchall():
                        await conn.execute(f"DROP TABLE IF EXISTS {name}".encode())
                        await conn.execute("DELETE FROM candle_partitions WHERE name = %s", (name,))
                        dropped.append(name)
                if self.trade_retention is not None:
                    cur = await conn.execute(
                        "SELECT name FROM trade_partitions WHERE NOT dropped"
                        " AND upper_bound <= %s ORDER BY lower_bound",
                        (now - self.trade_retention,),
                    )
                    for (name,) in await cur.fetchall():
                        await conn.execute(f"DROP TABLE IF EXISTS {name}".encode())
                        await conn.execute(
                            "UPDATE trade_partitions SET dropped = true WHERE name = %s", (name,)
                        )
                        dropped.append(name)
        except _ERRORS as e:
            raise HistoryUnavailable(self._describe(e)) from None
        self._partitions.difference_update(dropped)
        self._trade_partitions.difference_update(dropped)
        self._last_period.clear()
        for name in dropped:
            log.info("history retention: dropped partition %s", name)
        return dropped

    # -- trades ------------------------------------------------------------

    async def _epoch_id(self, conn: AsyncConnection[Any], epoch: bytes) -> int:
        """The id of a hot store epoch, numbered on first use (in the caller's
        transaction: cached only once it commits)."""
        found = self._epoch_ids.get(epoch)
        if found is not None:
            return found
        await conn.execute(
            "INSERT INTO trade_epochs (epoch) VALUES (%s) ON CONFLICT (epoch) DO NOTHING",
            (epoch,),
        )
        cur = await conn.execute("SELECT id FROM trade_epochs WHERE epoch = %s", (epoch,))
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def write_trades(
        self,
        rows: Sequence[TradeRow],
        checkpoints: Mapping[str, tuple[bytes, int]] | None = None,
    ) -> None:
        """Insert ``rows`` (a trade already stored stays as it is) and save the
        trade ``checkpoints`` (symbol -> (epoch, sequence number)) in the same
        transaction. Trades older than the retention are not written."""
        if not rows and not checkpoints:
            return
        if self.trade_retention is not None and rows:
            horizon = time.time_ns() - self.trade_retention
            rows = [r for r in rows if r.mark >= horizon]
        needed: dict[str, TradePeriod] = {}
        last: TradePeriod | None = None
        for row in rows:
            if last is None or not last.lower <= row.mark < last.upper:
                last = trade_period(row.mark)
                if last.name not in self._trade_partitions:
                    needed[last.name] = last
        ids: dict[bytes, int] = {}
        try:
            async with self._write_pool().connection() as conn, conn.transaction():
                if needed:
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                    for period in needed.values():
                        await conn.execute(
                            f"CREATE TABLE IF NOT EXISTS {period.name} PARTITION OF trades "
                            f"FOR VALUES FROM ({period.lower}) TO ({period.upper})".encode()
                        )
                        await conn.execute(
                            "INSERT INTO trade_partitions (name, lower_bound, upper_bound)"
                            " VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE SET dropped = false",
                            (period.name, period.lower, period.upper),
                        )
                if rows:
                    for epoch in {r.epoch for r in rows}:
                        ids[epoch] = await self._epoch_id(conn, epoch)
                    data = _trade_copy(
                        (r.symbol.encode(), ids[r.epoch] << SEQ_BITS | r.seq, r.mark, r.frame)
                        for r in rows
                    )
                    async with conn.cursor().copy(
                        "COPY trade_stage FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        await copy.write(data)
                    await conn.execute(_TRADE_INSERT)
                for symbol, (epoch, seq) in (checkpoints or {}).items():
                    await conn.execute(_TRADE_CHECKPOINT, (symbol, epoch, seq))
        except _ERRORS as e:
            raise HistoryUnavailable(self._describe(e)) from None
        self._trade_partitions.update(needed)
        self._epoch_ids.update(ids)

    async def trade_checkpoints(self) -> dict[str, tuple[bytes, int]]:
        """Symbol -> (epoch, trade sequence number) archived through."""
        try:
            async with self._write_pool().connection() as conn:
                cur = await conn.execute("SELECT symbol, epoch, seq FROM trade_checkpoints")
                rows = await cur.fetchall()
                await conn.rollback()
        except _ERRORS as e:
            raise HistoryUnavailable(self._describe(e)) from None
        return {row[0]: (bytes(row[1]), int(row[2])) for row in rows}

    @staticmethod
    def _run(rows: Sequence[asyncpg.Record]) -> TradeRun:
        cursors: list[int] = []
        lengths: array[int] = array("i")
        frames: list[bytes] = []
        for pos, frame, current in rows:
            if current is not None and pos >> SEQ_BITS == current:
                cursors.append(pos & _SEQ_MASK)
            else:
                cursors.append(pos - OLDER)
            frames.append(frame)
            lengths.append(len(frame))
        return TradeRun(cursors, FrameRun(b"".join(frames), lengths) if frames else [])

    async def trades_after(
        self,
        symbol: str,
        epoch: bytes,
        *,
        after: int,
        before: int,
        start: int | None,
        end: int | None,
        limit: int,
    ) -> TradeRun:
        """The first ``limit`` trades of ``symbol`` in the order received with
        ``after < cursor``, ``start <= mark < end``, and before trade ``before``
        of the hot store's epoch ``epoch`` (older epochs all come before it).

        A cursor is a trade's sequence number when it belongs to ``epoch``,
        else its position minus :data:`OLDER` (so negative, ascending with the
        position); :data:`BEGIN` is before every trade.
        """
        if limit <= 0:
            return TradeRun([], [])
        first = after == BEGIN and start is not None
        rows = await self._rows(
            _TRADES_FIRST if first else _TRADES_FORWARD,
            (
                symbol, epoch, after, before,
                _NO_START if start is None else start, _NO_END if end is None else end, limit,
            ),
        )  # fmt: skip
        return self._run(rows)

    async def trades_before(
        self, symbol: str, epoch: bytes, *, before: int, end: int | None, limit: int
    ) -> TradeRun:
        """The last ``limit`` trades of ``symbol`` with ``mark < end`` before
        trade ``before`` of epoch ``epoch``, in the order received (cursors as
        :meth:`trades_after`)."""
        if limit <= 0:
            return TradeRun([], [])
        rows = await self._rows(
            _TRADES_BACKWARD,
            (symbol, epoch, before, _NO_END if end is None else end, limit),
        )
        return self._run(list(reversed(rows)))

    async def trade_horizon(self) -> int | None:
        """The mark before which retention dropped trades (None: it dropped none)."""
        rows = await self._rows("SELECT max(upper_bound) FROM trade_partitions WHERE dropped", ())
        return None if rows[0][0] is None else int(rows[0][0])

    async def trade_count(self, symbol: str | None = None) -> int:
        if symbol is None:
            rows = await self._rows("SELECT count(*) FROM trades", ())
        else:
            rows = await self._rows("SELECT count(*) FROM trades WHERE symbol = $1", (symbol,))
        return int(rows[0][0])

    # -- reads -------------------------------------------------------------

    async def _rows(self, query: str, params: Sequence[Any]) -> list[asyncpg.Record]:
        pool = self._read_pool()
        try:
            for attempt in (1, 2):
                async with pool.acquire(timeout=self._timeout) as conn:
                    try:
                        return await conn.fetch(query, *params)
                    except asyncpg.InternalClientError:
                        # A connection left mid-operation (its server went
                        # away while it worked): not reusable; the pool
                        # replaces it and the read is tried once more.
                        conn.terminate()
                        if attempt == 2:
                            raise
                    except _READ_ERRORS:
                        # A connection broken since its last use (a server
                        # restart) is replaced by the pool; the read is tried
                        # once more on another.
                        if attempt == 2 or not conn.is_closed():
                            raise
        except _READ_ERRORS as e:
            raise HistoryUnavailable(self._describe(e)) from None
        raise AssertionError("unreachable")

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        """Candles with ``start <= open_time < end``: the first ``limit`` when
        ``start`` is given, else the last ``limit`` (as :meth:`Store.get_candles`)."""
        if limit <= 0:
            return CandleSlice((), ())
        symbol, code = series.symbol, int(series.interval)
        times_out: array[int] = array("q")
        lengths_out: array[int] = array("i")
        parts: list[bytes] = []
        need = limit
        hi = _NO_END if end is None else end
        if start is not None:
            cursor = block_of(series.interval, start)
            while need > 0:
                batch = need // BLOCK_CAPACITY + 2
                rows = await self._rows(_FORWARD, (symbol, code, cursor, hi, batch))
                for _, times_raw, lengths_raw, frames in rows:
                    times = unpack(times_raw, "q")
                    lo_i = bisect_left(times, start)
                    hi_i = len(times) if end is None else bisect_left(times, end)
                    take = min(hi_i, lo_i + need)
                    if take > lo_i:
                        lengths = unpack(lengths_raw, "i")
                        first = sum(lengths[:lo_i])
                        parts.append(frames[first : first + sum(lengths[lo_i:take])])
                        times_out.extend(times[lo_i:take])
                        lengths_out.extend(lengths[lo_i:take])
                        need -= take - lo_i
                        if need <= 0:
                            break
                if len(rows) < batch:
                    break
                cursor = int(rows[-1][0]) + 1
        else:
            cursor = hi
            runs: list[tuple[array[int], array[int], bytes]] = []
            while need > 0:
                batch = need // BLOCK_CAPACITY + 2
                rows = await self._rows(_BACKWARD, (symbol, code, cursor, batch))
                for _, times_raw, lengths_raw, frames in rows:
                    times = unpack(times_raw, "q")
                    hi_i = len(times) if end is None else bisect_left(times, end)
                    lo_i = max(0, hi_i - need)
                    if hi_i > lo_i:
                        lengths = unpack(lengths_raw, "i")
                        first = sum(lengths[:lo_i])
                        data = frames[first : first + sum(lengths[lo_i:hi_i])]
                        runs.append((times[lo_i:hi_i], lengths[lo_i:hi_i], data))
                        need -= hi_i - lo_i
                        if need <= 0:
                            break
                if len(rows) < batch:
                    break
                cursor = int(rows[-1][0])
            for times, lengths, data in reversed(runs):
                times_out.extend(times)
                lengths_out.extend(lengths)
                parts.append(data)
        if not times_out:
            return CandleSlice((), ())
        return CandleSlice(times_out, FrameRun(b"".join(parts), lengths_out))

    async def _blocks_times(self, series: SeriesKey, start: int, end: int) -> list[array[int]]:
        rows = await self._rows(
            _READ_TIMES,
            (series.symbol, int(series.interval), block_of(series.interval, start), end),
        )
        out = []
        for _, raw in rows:
            times = unpack(raw, "q")
            if times and (times[0] < start or times[-1] >= end):
                times = times[bisect_left(times, start) : bisect_left(times, end)]
            if times:
                out.append(times)
        return out

    async def open_times(self, series: SeriesKey, start: int, end: int) -> array[int]:
        """Every stored open time in ``[start, end)``."""
        out: array[int] = array("q")
        for times in await self._blocks_times(series, start, end):
            out.extend(times)
        return out

    async def earliest(self, series: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        """The oldest stored open time of each series that has any."""
        if not series:
            return {}
        keys = list(series)
        rows = await self._rows(
            _EARLIEST, ([k.symbol for k in keys], [int(k.interval) for k in keys])
        )
        return {keys[int(i) - 1]: unpack(times, "q")[0] for i, times in rows}

    async def missing(self, series: SeriesKey, start: int, end: int) -> list[tuple[int, int]]:
        """Ranges ``[lo, hi)`` of candle open times in ``[start, end)`` (``start``
        aligned) for which no candle is stored, in order."""
        if end <= start:
            return []
        interval = series.interval
        length = fixed_length(interval)
        holes: list[tuple[int, int]] = []
        expected = start
        for times in await self._blocks_times(series, start, end):
            if (
                length is not None
                and times[0] == expected
                and (times[-1] - times[0] == (len(times) - 1) * length)
            ):
                expected = times[-1] + length  # a full run: nothing missing inside
                continue
            for t in times:
                if t > expected:
                    holes.append((expected, t))
                expected = t + length if length is not None else bucket_end(interval, t)
        if expected < end:
            holes.append((expected, end))
        return holes

    async def count(self, series: SeriesKey | None = None) -> int:
        if series is None:
            rows = await self._rows("SELECT coalesce(sum(count), 0)::int8 FROM candles", ())
        else:
            rows = await self._rows(
                "SELECT coalesce(sum(count), 0)::int8 FROM candles WHERE symbol = $1"
                " AND interval = $2::int2",
                (series.symbol, int(series.interval)),
            )
        return int(rows[0][0])

    async def size_bytes(self) -> int:
        """Table, TOAST and index bytes of every candle partition."""
        rows = await self._rows(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c"
            " JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.relkind = 'r'"
            " AND c.relname LIKE 'candles\\_%'",
            (),
        )
        return int(rows[0][0])


_EMPTY = Block.empty()


def gaps(interval: Interval, start: int, end: int, times: Sequence[int]) -> list[tuple[int, int]]:
    """Ranges in ``[start, end)`` (``start`` aligned) with no open time in ``times`` (sorted)."""
    holes: list[tuple[int, int]] = []
    expected = start
    for t in times:
        if t < expected:
            continue
        if t > expected:
            holes.append((expected, t))
        expected = bucket_end(interval, t)
    if expected < end:
        holes.append((expected, end))
    return holes
