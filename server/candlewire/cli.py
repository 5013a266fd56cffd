"""The ``candlewire`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from candlewire import __version__
from candlewire.config import Settings, add_arguments, load
from candlewire.errors import ConfigError
from candlewire.history import commands as history_commands
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


async def _serve(settings: Settings) -> None:
    from candlewire.app import App

    app = App(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop)
    await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        print(f"candlewire: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve(settings))
    except ConfigError as error:  # found at start-up, e.g. a symbol the venue does not list
        log.error("%s", error)
        print(f"candlewire: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
