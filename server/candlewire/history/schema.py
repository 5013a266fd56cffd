"""The history tier's schema: versioned migrations and time partitions.

Migrations are numbered SQL scripts applied in order, each in its own
transaction together with the row recording it in ``candlewire_migrations``.
:func:`apply_migrations` holds an advisory lock on its connection while it works, so several
processes starting at once apply each migration exactly once (the others
wait, then find nothing left to do).

``candles`` holds closed candles in blocks (:mod:`candlewire.history.blocks`)
keyed by (symbol, interval, block_start). It is partitioned twice, natively:
by ``interval`` (one partition per interval, ``candles_m1`` ...), and each of
those by ``block_start`` ranges (a day of 1s candles, a month of 1m to 30m
candles, a year of anything longer), created on demand by the writer; a block
never crosses one. Retention drops whole time partitions. Frames are the
candles encoded once at write time, exactly as the hot stores keep them
(:mod:`candlewire.codec`).

``trades`` (migration 2) holds one row per trade, its frame encoded once as
the hot stores keep it, keyed by (symbol, position, mark). The position
orders a symbol's trades as they were received: ``epoch id << 40 | trade
sequence number``, where ``trade_epochs`` numbers the hot store's epochs in
the order their first trade was archived, so a trade archived twice is one
row. It is partitioned by ``mark`` (the time the hot stores select trades
by) in days, registered in ``trade_partitions``; a second index finds
each epoch's first trade at or after a time (marks never decrease within an
epoch), so a read from a ``start`` seeks instead of scanning its day; retention drops whole days
and remembers them (``dropped``), so reads can tell a range it cut.
``trade_checkpoints`` is the trade archiver's own checkpoint per symbol.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from candlewire.domain import NANOS_PER_SECOND, Interval

__all__ = [
    "LOCK_KEY",
    "MIGRATIONS",
    "Period",
    "TradePeriod",
    "apply_migrations",
    "partition_name",
    "period_of",
    "schema_version",
    "trade_period",
]

LOCK_KEY = 0x63776869  # "cwhi": the advisory lock of migrations and partition changes


def _interval_partitions() -> str:
    return "\n".join(
        f"CREATE TABLE candles_{i.name.lower()} PARTITION OF candles "
        f"FOR VALUES IN ({i.value}) PARTITION BY RANGE (block_start);"
        for i in Interval
    )


MIGRATIONS: tuple[str, ...] = (
    # 1: candles, their partitions' registry and the archive checkpoints
    f"""
    CREATE TABLE candles (
        symbol text COLLATE "C" NOT NULL,
        interval smallint NOT NULL,
        block_start bigint NOT NULL,
        count integer NOT NULL,
        times bytea NOT NULL,
        revisions bytea NOT NULL,
        lengths bytea NOT NULL,
        frames bytea NOT NULL,
        PRIMARY KEY (symbol, interval, block_start)
    ) PARTITION BY LIST (interval);
    {_interval_partitions()}
    CREATE TABLE candle_partitions (
        name text PRIMARY KEY,
        interval smallint NOT NULL,
        lower_bound bigint NOT NULL,
        upper_bound bigint NOT NULL
    );
    CREATE TABLE archive_checkpoints (
        symbol text COLLATE "C" PRIMARY KEY,
        epoch bytea NOT NULL,
        seq bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 2: trades, their epochs, their partitions' registry and checkpoints
    """
    CREATE TABLE trade_epochs (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        epoch bytea NOT NULL UNIQUE
    );
    CREATE TABLE trades (
        symbol text COLLATE "C" NOT NULL,
        pos bigint NOT NULL,
        mark bigint NOT NULL,
        frame bytea NOT NULL,
        PRIMARY KEY (symbol, pos, mark)
    ) PARTITION BY RANGE (mark);
    CREATE INDEX trades_epoch_mark ON trades (symbol, (pos >> 40), mark, pos);
    CREATE TABLE trade_partitions (
        name text PRIMARY KEY,
        lower_bound bigint NOT NULL,
        upper_bound bigint NOT NULL,
        dropped boolean NOT NULL DEFAULT false
    );
    CREATE TABLE trade_checkpoints (
        symbol text COLLATE "C" PRIMARY KEY,
        epoch bytea NOT NULL,
        seq bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    """,
)


async def schema_version(conn: AsyncConnection[Any]) -> int:
    """The newest migration applied (0: none)."""
    row = await (
        await conn.execute("SELECT to_regclass('candlewire_migrations') IS NOT NULL")
    ).fetchone()
    if row is None or not row[0]:
        return 0
    row = await (
        await conn.execute("SELECT coalesce(max(version), 0) FROM candlewire_migrations")
    ).fetchone()
    return int(row[0]) if row is not None else 0


async def apply_migrations(conn: AsyncConnection[Any]) -> list[int]:
    """Apply the migrations not applied yet; returns their numbers.

    ``conn`` must be in autocommit mode (each migration is its own transaction).
    """
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS candlewire_migrations ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await schema_version(conn)
        for version, script in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            async with conn.transaction():
                await conn.execute(script.encode())
                await conn.execute(
                    "INSERT INTO candlewire_migrations (version) VALUES (%s)", (version,)
                )
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied


@dataclass(frozen=True, slots=True)
class Period:
    """One time partition of one interval: open times in ``[lower, upper)``."""

    interval: Interval
    lower: int
    upper: int
    name: str


_DAY = {Interval.S1}
_MONTH = {Interval.M1, Interval.M3, Interval.M5, Interval.M15, Interval.M30}


def _ns(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * NANOS_PER_SECOND


def period_of(interval: Interval, open_time: int) -> Period:
    """The partition that holds a candle of ``interval`` opening at ``open_time``."""
    day = dt.datetime.fromtimestamp(open_time // NANOS_PER_SECOND, dt.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    base = interval.name.lower()
    if interval in _DAY:
        lower, upper = day, day + dt.timedelta(days=1)
        suffix = lower.strftime("%Y%m%d")
    elif interval in _MONTH:
        lower = day.replace(day=1)
        upper = (lower + dt.timedelta(days=32)).replace(day=1)
        suffix = lower.strftime("%Y%m")
    else:
        lower = day.replace(month=1, day=1)
        upper = lower.replace(year=lower.year + 1)
        suffix = lower.strftime("%Y")
    if lower.year < 1:
        suffix = "bc" + suffix
    return Period(interval, _ns(lower), _ns(upper), partition_name(base, suffix))


def partition_name(base: str, suffix: str) -> str:
    return f"candles_{base}_p{suffix}"


@dataclass(frozen=True, slots=True)
class TradePeriod:
    """One time partition of ``trades``: marks in ``[lower, upper)`` (a UTC day)."""

    lower: int
    upper: int
    name: str


def trade_period(mark: int) -> TradePeriod:
    """The partition that holds a trade of mark ``mark``."""
    day = dt.datetime.fromtimestamp(mark // NANOS_PER_SECOND, dt.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    suffix = day.strftime("%Y%m%d")
    if day.year < 1:
        suffix = "bc" + suffix
    return TradePeriod(_ns(day), _ns(day + dt.timedelta(days=1)), f"trades_p{suffix}")
