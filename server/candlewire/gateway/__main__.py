"""``python -m candlewire.gateway``: the gateway alone, in front of any gRPC server.

Example::

    python -m candlewire.gateway --grpc-target 127.0.0.1:50051 --listen 0.0.0.0:8080

Flags fall back to the service's variables: ``CANDLEWIRE_HTTP_LISTEN`` and
``CANDLEWIRE_HTTP_ALLOWED_ORIGINS`` (comma-separated).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from candlewire.config import parse_listen
from candlewire.gateway._server import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_STATIC_DIR, Gateway

__all__ = ["main"]

log = logging.getLogger("candlewire.gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m candlewire.gateway",
        description="grpc-web gateway and web page in front of a Candlewire gRPC server",
    )
    parser.add_argument(
        "--grpc-target", default="127.0.0.1:50051", help="gRPC server (default 127.0.0.1:50051)"
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("CANDLEWIRE_HTTP_LISTEN", "0.0.0.0:8080"),
        help="HTTP listen address host:port (env CANDLEWIRE_HTTP_LISTEN, default 0.0.0.0:8080)",
    )
    parser.add_argument(
        "--allowed-origins",
        default=os.environ.get("CANDLEWIRE_HTTP_ALLOWED_ORIGINS", ""),
        help="comma-separated origins whose pages may call the API, or * "
        "(env CANDLEWIRE_HTTP_ALLOWED_ORIGINS; the page served here needs none)",
    )
    parser.add_argument(
        "--static-dir",
        type=Path,
        default=DEFAULT_STATIC_DIR,
        help="directory of the built page (default: the page shipped in the package)",
    )
    parser.add_argument("--no-static", action="store_true", help="serve the API only")
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"largest request message (default {DEFAULT_MAX_REQUEST_BYTES})",
    )
    parser.add_argument("--shutdown-grace", type=float, default=5.0, help="seconds to drain")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=20.0,
        help="seconds a connection may take over a request's line and headers (default 20)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


async def _run(args: argparse.Namespace, host: str, port: int) -> None:
    gateway = Gateway(
        args.grpc_target,
        static_dir=None if args.no_static else args.static_dir,
        allowed_origins=args.allowed_origins.split(","),
        max_request_bytes=args.max_request_bytes,
        shutdown_grace=args.shutdown_grace,
        idle_timeout=args.idle_timeout,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await gateway.start(host, port)
    try:
        await stopping.wait()
        log.info("shutting down")
    finally:
        await gateway.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gateway until SIGINT or SIGTERM."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as error:
        parser.error(f"--listen: {error}")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_run(args, host, port))
    except ValueError as error:  # a malformed origin or limit
        print(f"candlewire.gateway: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
