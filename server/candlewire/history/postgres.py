"""The history store on PostgreSQL (psycopg 3).

Writes go through binary ``COPY`` into a per-connection staging table and one
``INSERT ... ON CONFLICT`` from it, so a batch of any size is two round trips
and the newest revision wins (an older revision never replaces a newer one,
whatever the order batches arrive in). An archive checkpoint can be saved in
the same transaction as the rows it covers.

Reads return one row whatever their size: the database concatenates the
stored frames (``string_agg``) and the packed open times and frame lengths,
so 1,000 candles are three ``bytes`` objects here, handed to callers as a
:class:`~candlewire.codec.FrameRun` without one Python object per candle.

Every PostgreSQL failure while running becomes
:class:`~candlewire.errors.HistoryUnavailable`; failures at :meth:`connect`
(a bad URL, a refused password, an unknown database, nobody listening) are a
:class:`~candlewire.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import logging
import struct
import sys
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
import psycopg_pool
from psycopg import AsyncConnection

from candlewire.codec import FrameRun
from candlewire.domain import Interval, SeriesKey
from candlewire.errors import ConfigError, HistoryUnavailable
from candlewire.history.schema import (
    LOCK_KEY,
    Period,
    apply_migrations,
    period_of,
    schema_version,
)
from candlewire.intervals import bucket_end, fixed_length
from candlewire.store.base import CandleSlice

__all__ = ["HistoryRow", "HistoryStore", "encode_copy", "gaps", "redact_url", "rows_from_candles"]

log = logging.getLogger(__name__)

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_TAIL = struct.Struct(">iqiii")  # open_time, revision, frame: (length, value) pairs
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


def redact_url(url: str) -> str:
    """The URL without its password (for logs and error messages)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if password:
        return url.replace(":" + password + "@", ":***@", 1)
    return url


def _scrub(text: str, url: str) -> str:
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return text


class _Encoder:
    """Binary COPY rows, with the per-series prefix built once."""

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, int], bytes] = {}

    def prefix(self, symbol: str, interval: int) -> bytes:
        key = (symbol, interval)
        found = self._prefixes.get(key)
        if found is None:
            raw = symbol.encode()
            found = struct.pack(">hi", 5, len(raw)) + raw + struct.pack(">ih", 2, interval)
            self._prefixes[key] = found
        return found


_encoder = _Encoder()


def encode_copy(rows: Iterable[HistoryRow]) -> bytes:
    """The rows in PostgreSQL's binary COPY format (staging table column order)."""
    pack = _TAIL.pack
    prefix = _encoder.prefix
    parts = [_COPY_HEADER]
    append = parts.append
    for row in rows:
        frame = row.frame
        append(prefix(row.symbol, row.interval))
        append(pack(8, row.open_time, 4, row.revision, len(frame)))
        append(frame)
    append(_COPY_TRAILER)
    return b"".join(parts)


_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS candle_stage ("
    ' symbol text COLLATE "C", interval smallint, open_time bigint, revision integer,'
    " frame bytea) ON COMMIT DELETE ROWS"
)
_UPSERT = (
    "INSERT INTO candles AS c (symbol, interval, open_time, revision, frame) "
    "SELECT DISTINCT ON (symbol, interval, open_time) symbol, interval, open_time, revision, frame "
    "FROM candle_stage ORDER BY symbol, interval, open_time, revision DESC "
    "ON CONFLICT (symbol, interval, open_time) DO UPDATE "
    "SET revision = EXCLUDED.revision, frame = EXCLUDED.frame "
    "WHERE c.revision < EXCLUDED.revision"
)
_CHECKPOINT = (
    "INSERT INTO archive_checkpoints (symbol, epoch, seq) VALUES (%s, %s, %s) "
    "ON CONFLICT (symbol) DO UPDATE SET epoch = EXCLUDED.epoch, seq = EXCLUDED.seq, "
    "updated_at = now()"
)
# The subqueries hand rows over in open-time order and the aggregates keep
# it (an ORDER BY inside each aggregate would sort three times over).
_AGG = (
    "SELECT coalesce(string_agg(frame, ''::bytea), ''::bytea),"
    " coalesce(string_agg(int8send(open_time), ''::bytea), ''::bytea),"
    " coalesce(string_agg(int4send(length(frame)), ''::bytea), ''::bytea)"
)
_FIRST = (
    _AGG + " FROM (SELECT open_time, frame FROM candles WHERE symbol = %s AND interval = %s::int2"
    " AND open_time >= %s AND open_time < %s ORDER BY open_time LIMIT %s) AS t"
)
_LAST = (
    _AGG + " FROM (SELECT open_time, frame FROM (SELECT open_time, frame FROM candles"
    " WHERE symbol = %s AND interval = %s::int2 AND open_time >= %s AND open_time < %s"
    " ORDER BY open_time DESC LIMIT %s) AS d ORDER BY open_time) AS t"
)
_TIMES = (
    "SELECT coalesce(string_agg(int8send(open_time), ''::bytea ORDER BY open_time), ''::bytea)"
    " FROM candles WHERE symbol = %s AND interval = %s::int2 AND open_time >= %s"
    " AND open_time < %s"
)
_GAPS = (
    "SELECT prev, open_time FROM (SELECT open_time, lag(open_time) OVER (ORDER BY open_time)"
    " AS prev FROM candles WHERE symbol = %s AND interval = %s::int2 AND open_time >= %s"
    " AND open_time < %s) AS t WHERE open_time - prev > %s ORDER BY open_time"
)
_BOUNDS = (
    "SELECT (SELECT min(open_time) FROM candles WHERE symbol = %(s)s AND interval = %(i)s::int2"
    " AND open_time >= %(lo)s AND open_time < %(hi)s),"
    " (SELECT max(open_time) FROM candles WHERE symbol = %(s)s AND interval = %(i)s::int2"
    " AND open_time >= %(lo)s AND open_time < %(hi)s)"
)
_EARLIEST = "SELECT min(open_time) FROM candles WHERE symbol = %s AND interval = %s::int2"


def _int64s(data: bytes) -> array[int]:
    values = array("q", data)
    if sys.byteorder == "little":
        values.byteswap()
    return values


def _int32s(data: bytes) -> array[int]:
    values = array("i", data)
    if sys.byteorder == "little":
        values.byteswap()
    return values


async def _stage(conn: AsyncConnection[Any]) -> None:
    await conn.execute(_STAGE)
    await conn.commit()


async def _generic_plans(conn: AsyncConnection[Any]) -> None:
    # Reads are prepared statements over partitioned tables: a custom plan
    # would be planned again at every call (about a millisecond with the
    # partitions of a year), a generic one prunes partitions when it runs.
    await conn.execute("SET plan_cache_mode = force_generic_plan")


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
        pool_size: int = 4,
        timeout: float = 5.0,
        setting: str = "postgres_url",
    ) -> None:
        self._url = url
        self._read_url = read_url or url
        self.retention: dict[Interval, int] = dict(retention or {})
        self._pool_size = pool_size
        self._timeout = timeout
        self._setting = setting
        self._writer: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._reader: psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]] | None = None
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
            reason = _scrub(str(error).strip().splitlines()[-1] if str(error) else "", url)
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
            raise HistoryUnavailable(
                f"migrations failed: {_scrub(str(error), self._url)}"
            ) from None
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
        self._reader = psycopg_pool.AsyncConnectionPool(
            self._read_url,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=self._timeout,
            # Autocommit: a read is one round trip, no transaction to end when
            # the connection goes back. No check on checkout either: a read
            # that finds its connection broken retries once (see _one).
            kwargs={"autocommit": True},
            configure=_generic_plans,
            name="history-reader",
        )
        try:
            await self._writer.open(wait=True, timeout=self._timeout)
            await self._reader.open(wait=True, timeout=self._timeout)
        except psycopg_pool.PoolTimeout:
            await self.close()
            raise ConfigError(
                f"{self._setting}: PostgreSQL at {self.redacted_url} did not accept connections"
            ) from None
        await self._load_partitions()

    async def close(self) -> None:
        for pool in (self._writer, self._reader):
            if pool is not None:
                await pool.close()
        self._writer = self._reader = None

    def _pool(self, write: bool) -> psycopg_pool.AsyncConnectionPool[AsyncConnection[Any]]:
        pool = self._writer if write else self._reader
        if pool is None:
            raise HistoryUnavailable("the history store is not connected")
        return pool

    async def ping(self) -> None:
        try:
            async with self._pool(False).connection() as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            raise HistoryUnavailable(self._describe(error)) from None

    def _describe(self, error: BaseException) -> str:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return "PostgreSQL: " + _scrub(text, self._url)

    # -- partitions --------------------------------------------------------

    async def _load_partitions(self) -> None:
        async with self._pool(False).connection() as conn:
            cur = await conn.execute("SELECT name FROM candle_partitions")
            self._partitions = {row[0] for row in await cur.fetchall()}

    def _periods(self, rows: Sequence[HistoryRow]) -> dict[str, Period]:
        needed: dict[str, Period] = {}
        last = self._last_period
        for row in rows:
            period = last.get(row.interval)
            t = row.open_time
            if period is None or not period.lower <= t < period.upper:
                period = last[row.interval] = period_of(row.interval, t)
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
                f"FOR VALUES FROM ({period.lower}) TO ({period.upper})".encode()
            )
            await conn.execute(
                "INSERT INTO candle_partitions (name, interval, lower_bound, upper_bound) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (period.name, period.interval.value, period.lower, period.upper),
            )

    # -- writes ------------------------------------------------------------

    async def write(
        self,
        rows: Sequence[HistoryRow],
        checkpoints: Mapping[str, tuple[bytes, int]] | None = None,
    ) -> None:
        """Upsert ``rows`` (newest revision wins) and save ``checkpoints``
        (symbol -> (epoch, sequence number)) in the same transaction."""
        if not rows and not checkpoints:
            return
        needed = self._periods(rows)
        data = encode_copy(rows) if rows else b""
        try:
            async with self._pool(True).connection() as conn, conn.transaction():
                if needed:
                    await self._create_partitions(conn, needed.values())
                if rows:
                    async with conn.cursor().copy(
                        "COPY candle_stage FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        await copy.write(data)
                    await conn.execute(_UPSERT)
                for symbol, (epoch, seq) in (checkpoints or {}).items():
                    await conn.execute(_CHECKPOINT, (symbol, epoch, seq))
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as e:
            for name in needed:
                self._partitions.discard(name)
            self._last_period.clear()
            raise HistoryUnavailable(self._describe(e)) from None
        self._partitions.update(needed)

    async def write_copy(self, data: bytes, spans: Sequence[tuple[str, int, int, int]]) -> None:
        """Load rows already in binary COPY format (:func:`encode_copy`), in one
        transaction. ``spans`` names each series in them with its first and last
        open time. Into a range that holds nothing yet the rows are copied
        straight into the table; otherwise through the staging table and the
        upsert (newest revision wins), as :meth:`write`."""
        if not spans:
            return
        needed: dict[str, Period] = {}
        for _, code, lo, hi in spans:
            interval = Interval(code)
            period = period_of(interval, lo)
            while True:
                if period.name not in self._partitions:
                    needed[period.name] = period
                if period.upper > hi:
                    break
                period = period_of(interval, period.upper)
        try:
            async with self._pool(True).connection() as conn:
                direct = await self._empty(conn, spans)
                while True:
                    try:
                        async with conn.transaction():
                            if needed:
                                await self._create_partitions(conn, needed.values())
                            target = "candles" if direct else "candle_stage"
                            async with conn.cursor().copy(
                                f"COPY {target} FROM STDIN (FORMAT BINARY)".encode()
                            ) as copy:
                                await copy.write(data)
                            if not direct:
                                await conn.execute(_UPSERT)
                        break
                    except psycopg.errors.UniqueViolation:
                        if not direct:
                            raise
                        direct = False  # written meanwhile, or repeated in the file: upsert
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as e:
            self._last_period.clear()
            raise HistoryUnavailable(self._describe(e)) from None
        self._partitions.update(needed)

    @staticmethod
    async def _empty(
        conn: AsyncConnection[Any], spans: Sequence[tuple[str, int, int, int]]
    ) -> bool:
        for symbol, code, lo, hi in spans:
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM candles WHERE symbol = %s AND interval = %s::int2"
                " AND open_time >= %s AND open_time <= %s)",
                (symbol, code, lo, hi),
            )
            row = await cur.fetchone()
            if row is not None and row[0]:
                return False
        await conn.commit()
        return True

    async def checkpoints(self) -> dict[str, tuple[bytes, int]]:
        """Symbol -> (epoch, sequence number) archived through."""
        try:
            async with self._pool(True).connection() as conn:
                cur = await conn.execute("SELECT symbol, epoch, seq FROM archive_checkpoints")
                return {row[0]: (bytes(row[1]), int(row[2])) for row in await cur.fetchall()}
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as e:
            raise HistoryUnavailable(self._describe(e)) from None

    async def apply_retention(self, now: int | None = None) -> list[str]:
        """Drop the time partitions older than each interval's retention."""
        now = time.time_ns() if now is None else now
        dropped: list[str] = []
        try:
            async with self._pool(True).connection() as conn, conn.transaction():
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
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as e:
            raise HistoryUnavailable(self._describe(e)) from None
        self._partitions.difference_update(dropped)
        self._last_period.clear()
        for name in dropped:
            log.info("history retention: dropped partition %s", name)
        return dropped

    # -- reads -------------------------------------------------------------

    async def _one(self, query: str, params: Sequence[Any] | Mapping[str, Any]) -> tuple[Any, ...]:
        pool = self._pool(False)
        for attempt in (1, 2):
            conn: AsyncConnection[Any] | None = None
            try:
                async with pool.connection() as conn:
                    cur = await conn.execute(query, params, binary=True)
                    row = await cur.fetchone()
                break
            except psycopg_pool.PoolTimeout as e:
                raise HistoryUnavailable(self._describe(e)) from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                # A connection broken since its last use (a server restart) is
                # dropped by the pool; the read is tried once more on another.
                if attempt == 2 or conn is None or not (conn.closed or conn.broken):
                    raise HistoryUnavailable(self._describe(e)) from None
                await pool.check()
        assert row is not None
        return tuple(row)

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        """Candles with ``start <= open_time < end``: the first ``limit`` when
        ``start`` is given, else the last ``limit`` (as :meth:`Store.get_candles`)."""
        if limit <= 0:
            return CandleSlice((), ())
        query = _FIRST if start is not None else _LAST
        frames, times, lengths = await self._one(
            query,
            (
                series.symbol,
                int(series.interval),
                _NO_START if start is None else start,
                _NO_END if end is None else end,
                limit,
            ),
        )
        if not frames:
            return CandleSlice((), ())
        return CandleSlice(_int64s(times), FrameRun(bytes(frames), _int32s(lengths)))

    async def open_times(self, series: SeriesKey, start: int, end: int) -> array[int]:
        (times,) = await self._one(_TIMES, (series.symbol, int(series.interval), start, end))
        return _int64s(times)

    async def bounds(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> tuple[int, int] | None:
        """The oldest and newest stored open times (in ``[start, end)``), or None."""
        lo, hi = await self._one(
            _BOUNDS,
            {
                "s": series.symbol,
                "i": int(series.interval),
                "lo": _NO_START if start is None else start,
                "hi": _NO_END if end is None else end,
            },
        )
        return None if lo is None else (int(lo), int(hi))

    async def earliest(self, series: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        """The oldest stored open time of each series that has any."""
        found: dict[SeriesKey, int] = {}
        try:
            async with self._pool(False).connection() as conn, conn.pipeline():
                cursors = [
                    (key, await conn.execute(_EARLIEST, (key.symbol, int(key.interval))))
                    for key in series
                ]
                for key, cur in cursors:
                    row = await cur.fetchone()
                    if row is not None and row[0] is not None:
                        found[key] = int(row[0])
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as e:
            raise HistoryUnavailable(self._describe(e)) from None
        return found

    async def missing(self, series: SeriesKey, start: int, end: int) -> list[tuple[int, int]]:
        """Ranges ``[lo, hi)`` of candle open times in ``[start, end)`` (``start``
        aligned) for which no candle is stored, in order."""
        if end <= start:
            return []
        length = fixed_length(series.interval)
        if length is None:
            return gaps(
                series.interval, start, end, list(await self.open_times(series, start, end))
            )
        bounds = await self.bounds(series, start, end)
        if bounds is None:
            return [(start, end)]
        holes: list[tuple[int, int]] = []
        if bounds[0] > start:
            holes.append((start, bounds[0]))
        try:
            async with self._pool(False).connection() as conn:
                cur = await conn.execute(
                    _GAPS, (series.symbol, int(series.interval), start, end, length)
                )
                holes.extend((int(prev) + length, int(t)) for prev, t in await cur.fetchall())
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as e:
            raise HistoryUnavailable(self._describe(e)) from None
        if bounds[1] + length < end:
            holes.append((bounds[1] + length, end))
        return holes

    async def count(self, series: SeriesKey | None = None) -> int:
        if series is None:
            (n,) = await self._one("SELECT count(*) FROM candles", ())
        else:
            (n,) = await self._one(
                "SELECT count(*) FROM candles WHERE symbol = %s AND interval = %s::int2",
                (series.symbol, int(series.interval)),
            )
        return int(n)

    async def size_bytes(self) -> int:
        """Table and index bytes of every candle partition."""
        (n,) = await self._one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.relkind = 'r'"
            " AND c.relname LIKE 'candles\\_%%'",
            (),
        )
        return int(n)


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
