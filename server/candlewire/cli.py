"""The ``candlewire`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from candlewire import __version__
from candlewire.config import Settings, add_arguments, load
from candlewire.errors import ConfigError
from candlewire.history import commands as history_commands
from candlewire.logs import setup_logging
from candlewire_client.cli import add_commands, run

__all__ = ["main"]

log = logging.getLogger("candlewire")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="candlewire", description="Candlewire market-data service"
    )
    parser.add_argument("--version", action="version", version=f"candlewire {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service (feed, store and gRPC API)")
    add_arguments(serve)
    ingest = commands.add_parser(
        "ingest", help="run the feed into Redis only (same as serve --role ingest)"
    )
    add_arguments(ingest)
    keys = commands.add_parser("keys", help="manage the API keys file")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser(
        "create",
        help="create a key: its hash goes to the keys file, the key is printed once, "
        "alone on the last line",
    )
    create.add_argument("name", help="the key's name (shown in logs instead of the key)")
    create.add_argument(
        "--scopes",
        default="read",
        help="comma-separated scopes (prices, candles, symbols, streams; default read: "
        "every method)",
    )
    create.add_argument("--rate", type=float, default=None, help="unary requests per second")
    create.add_argument("--streams", type=int, default=None, help="concurrent streams")
    listing = keys_commands.add_parser("list", help="the keys' names, scopes and limits")
    for sub in (create, listing):
        sub.add_argument(
            "--file",
            default=None,
            help="the keys file (default: CANDLEWIRE_API_KEYS_FILE)",
        )
    saxo = commands.add_parser("saxo", help="Saxo feed operations")
    saxo_commands = saxo.add_subparsers(dest="saxo_command", required=True)
    saxo_login = saxo_commands.add_parser(
        "login",
        help="log in at Saxo for the service (prints the URL, reads back the redirect)",
    )
    add_arguments(saxo_login)
    add_commands(commands)  # the client: price, candles, watch, symbols, health
    history_commands.add_commands(commands)  # db upgrade, import, backfill
    return parser


def _keys(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from candlewire.api.auth import SCOPES
    from candlewire.api.keys import add_key, read_keys

    path = args.file or os.environ.get("CANDLEWIRE_API_KEYS_FILE", "")
    if not path:
        print("candlewire: give --file or set CANDLEWIRE_API_KEYS_FILE", file=sys.stderr)
        return 2
    if args.keys_command == "list":
        try:
            for key in read_keys(Path(path)):
                limits = f"rate={key.rate or 'default'} streams={key.streams or 'default'}"
                print(f"{key.name}\t{','.join(sorted(key.scopes))}\t{limits}")
        except (OSError, ValueError) as error:
            print(f"candlewire: cannot read {path}: {error}", file=sys.stderr)
            return 2
        return 0
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        print(
            f"candlewire: --scopes: unknown scope {unknown[0] if unknown else ''!r} "
            f"(known: {', '.join(sorted(SCOPES))})",
            file=sys.stderr,
        )
        return 2
    try:
        secret = add_key(path, args.name, scopes=scopes, rate=args.rate, streams=args.streams)
    except (OSError, ValueError) as error:
        print(f"candlewire: cannot add the key to {path}: {error}", file=sys.stderr)
        return 2
    print(f"created key {args.name!r} (scopes {','.join(scopes)}) in {path}")
    print("it is shown only now; the file keeps its hash:")
    print(secret)
    return 0


def _saxo_login(args: argparse.Namespace) -> int:
    from candlewire.feeds.saxo.cli import login
    from candlewire.feeds.saxo.setup import from_settings

    args.feed = "saxo"
    try:
        settings = load(args)
        return asyncio.run(login(from_settings(settings)))
    except ConfigError as error:
        print(f"candlewire: {error}", file=sys.stderr)
        return 2


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop (libuv): per live update and per call, less of the core
    goes to the loop itself (see bench/README.md); asyncio's on request."""
    if name != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop


async def _serve(settings: Settings, started: list[bool]) -> None:
    from candlewire.app import App

    app = App(settings)
    app.started_callback = lambda: started.append(True)
    loop = asyncio.get_running_loop()
    log.info("event loop: %s (%s)", settings.event_loop, type(loop).__module__)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop)
    await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "keys":
        return _keys(args)
    if args.command in history_commands.COMMANDS:
        return history_commands.run(args)
    if args.command == "saxo":
        return _saxo_login(args)
    if args.command not in ("serve", "ingest"):
        return run(args)
    if args.command == "ingest":
        args.role = "ingest"
    try:
        settings = load(args)
    except ConfigError as error:
        print(f"candlewire: {_one_line(error)}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    started: list[bool] = []
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            runner.run(_serve(settings, started))
    except ConfigError as error:  # found at start-up: a port in use, an unreadable file...
        print(f"candlewire: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        if started:
            raise
        # Any other start-up failure: one line, no traceback.
        print(f"candlewire: start-up failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    return 0


def _one_line(error: BaseException) -> str:
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
