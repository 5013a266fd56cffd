"""``candlewire db upgrade``, ``candlewire import`` and ``candlewire backfill``.

Each reads the database from ``--postgres-url`` or ``CANDLEWIRE_POSTGRES_URL``
and exits 0 on success, 1 when the work failed (a malformed file, PostgreSQL
or Binance unreachable) and 2 for bad arguments or settings, printing one
line that names the file, line or setting at fault.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import Any

from candlewire.domain import Interval
from candlewire.errors import CandlewireError, ConfigError

__all__ = ["COMMANDS", "add_commands", "parse_time", "run"]

COMMANDS = ("db", "import", "backfill")
log = logging.getLogger("candlewire.history")


def parse_time(text: str, field: str) -> int:
    """``2025-01-01`` or an ISO 8601 time (UTC unless it says otherwise), in ns."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{field}: {text!r} is not a date (2025-01-01) or ISO time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1_000_000) * 1000


def _intervals(text: str, field: str) -> tuple[Interval, ...]:
    try:
        return tuple(sorted({Interval.parse(p.strip()) for p in text.split(",") if p.strip()}))
    except ValueError as error:
        raise ConfigError(f"{field}: {error}") from None


def _database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="PostgreSQL URL of the history store (env CANDLEWIRE_POSTGRES_URL)",
    )


def add_commands(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="the history database (PostgreSQL)")
    actions = db.add_subparsers(dest="db_command", required=True)
    upgrade = actions.add_parser("upgrade", help="apply pending schema migrations")
    _database(upgrade)

    load = subparsers.add_parser(
        "import", help="load data.binance.vision kline or trade files into the history store"
    )
    load.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or directories")
    load.add_argument(
        "--intervals",
        default=",".join(i.label for i in Interval),
        help="intervals built from trade files (kline files are stored as they are)",
    )
    load.add_argument("--plain", action="store_true", help="log lines instead of a progress bar")
    _database(load)

    backfill = subparsers.add_parser(
        "backfill", help="fetch missing Binance klines over REST into the history store"
    )
    backfill.add_argument("--symbols", required=True, help="comma-separated symbols")
    backfill.add_argument("--intervals", required=True, help="intervals fetched (1m,1h,1d ...)")
    backfill.add_argument("--since", required=True, help="start, e.g. 2025-01-01")
    backfill.add_argument("--until", default=None, help="end (default: now)")
    backfill.add_argument(
        "--derive",
        default="",
        help="intervals rolled up from the finest fetched one instead of fetched (5m,4h ...)",
    )
    backfill.add_argument(
        "--weight-share",
        type=float,
        default=None,
        help="share of Binance's request-weight limit to use, leaving the rest to running "
        "feeds (env CANDLEWIRE_BACKFILL_WEIGHT_SHARE, default 0.25)",
    )
    backfill.add_argument(
        "--binance-rest-url",
        default=None,
        help="Binance REST endpoint (env CANDLEWIRE_BINANCE_REST_URL)",
    )
    backfill.add_argument(
        "--plain", action="store_true", help="log lines instead of a progress bar"
    )
    _database(backfill)


def _url(args: argparse.Namespace) -> str:
    url = args.postgres_url or os.environ.get("CANDLEWIRE_POSTGRES_URL", "")
    if not url:
        raise ConfigError(
            "postgres_url (--postgres-url / CANDLEWIRE_POSTGRES_URL): required for this command"
        )
    return url


def run(args: argparse.Namespace) -> int:
    """Run a history command; the exit status."""
    logging.basicConfig(
        level=os.environ.get("CANDLEWIRE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_run(args))
    except ConfigError as error:
        print(f"candlewire: {error}", file=sys.stderr)
        return 2
    except CandlewireError as error:
        print(f"candlewire: {error}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    from candlewire.history.load import Progress, backfill, import_files
    from candlewire.history.postgres import HistoryStore

    store = HistoryStore(_url(args))
    if args.command == "db":
        applied = await store.upgrade()
        version = await store.version()
        print(
            f"history schema at version {version}"
            + (f" (applied {', '.join(map(str, applied))})" if applied else " (up to date)")
        )
        return 0
    stream = None if getattr(args, "plain", False) else sys.stderr
    await store.connect()
    try:
        if args.command == "import":
            progress = Progress("import", stream=stream)
            report = await import_files(
                store, args.paths, intervals=_intervals(args.intervals, "--intervals"),
                progress=progress,
            )  # fmt: skip
            progress.finish()
            print(
                f"imported {report.candles:,} candles from {report.files} files "
                f"in {report.seconds:.1f}s ({report.rate:,.0f}/s)"
            )
            return 0
        return await _backfill(args, store, Progress("backfill", stream=stream), backfill)
    finally:
        await store.close()


async def _backfill(args: argparse.Namespace, store: Any, progress: Any, backfill: Any) -> int:
    from candlewire.feeds.binance.http import BinanceHttp

    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        raise ConfigError("--symbols: at least one symbol is required")
    intervals = _intervals(args.intervals, "--intervals")
    derived = _intervals(args.derive, "--derive") if args.derive else ()
    since = parse_time(args.since, "--since")
    until = parse_time(args.until, "--until") if args.until else None
    if until is not None and until <= since:
        raise ConfigError("--until: must be after --since")
    share = args.weight_share
    if share is None:
        share = float(os.environ.get("CANDLEWIRE_BACKFILL_WEIGHT_SHARE", "0.25"))
    if not 0 < share <= 1:
        raise ConfigError("--weight-share: must be in (0, 1]")
    url = args.binance_rest_url or os.environ.get(
        "CANDLEWIRE_BINANCE_REST_URL", "https://api.binance.com"
    )
    http = BinanceHttp(url, weight_share=share)
    try:
        report = await backfill(
            store, http, symbols, intervals, since, until, derived=derived, progress=progress
        )
    finally:
        await http.aclose()
    progress.finish()
    print(
        f"backfilled {report.candles:,} candles with {report.requests} requests "
        f"in {report.seconds:.1f}s"
    )
    return 0
