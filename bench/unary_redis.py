"""Unary benchmarks on Redis: an API replica with its local caches, under h2load.

    python bench/unary_redis.py [--quick] [--json]

A private ``redis-server`` (free port, no persistence), one ingesting process
(``candlewire ingest``: the simulator with 20 symbols writing into Redis) and
one serving replica (``candlewire serve --role api``), which answers
``GetPrice`` and ``BatchGetPrices`` from its quote cache and ``GetCandles``
from its recent-candle cache, both kept current by its one stream reader.
The ceiling is the same no-op ``grpc.aio`` handler as in ``unary.py``,
returning the replica's own response bytes. The replica and the ceiling run
pinned to one core, h2load to the other; Redis and the ingestor keep running
during both measurements, so both see the same background load. Runs
alternate ceiling/replica per method and the best of ``--rounds`` is kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, SYMBOLS, cores, free_port, pinned, spawn, wait_serving
from unary import UnaryRow, call_raw, compare, record

from candlewire.api.server import SERVICE_NAME


def _first_answer(port: int, method: str, request: Any, timeout: float = 60.0) -> bytes:
    """The replica's first successful answer: quotes reach it after the
    ingestor's backfill and first live ticks, later than readiness."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call_raw(port, method, request)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def run(*, quick: bool) -> list[UnaryRow]:
    if shutil.which("h2load") is None:
        raise RuntimeError("h2load not found: apt-get install nghttp2-client")
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    available = cores()
    server_core = available[0] if len(available) > 1 else None
    load_core = available[1] if len(available) > 1 else None
    seconds = 3.0 if quick else 8.0
    rounds = 1 if quick else 2
    with tempfile.TemporaryDirectory(prefix="cw-unary-redis-") as tmp:
        work = Path(tmp)
        redis_port = free_port()
        redis_argv = [server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"]  # fmt: skip
        env = {
            "CANDLEWIRE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "CANDLEWIRE_SYMBOLS": ",".join(SYMBOLS),
            "CANDLEWIRE_HTTP_LISTEN": "",
            "CANDLEWIRE_LOG_LEVEL": "WARNING",
        }
        ingest_port, api_port = free_port(), free_port()
        ingest_argv = [PYTHON, "-m", "candlewire", "ingest", "--grpc-listen",
                       f"127.0.0.1:{ingest_port}"]  # fmt: skip
        api_argv = [PYTHON, "-m", "candlewire", "serve", "--role", "api", "--grpc-listen",
                    f"127.0.0.1:{api_port}"]  # fmt: skip
        with (
            spawn(pinned(load_core, redis_argv)),
            spawn(pinned(load_core, ingest_argv), env=env),
            spawn(pinned(server_core, api_argv), env=env),
        ):
            wait_serving(ingest_port, service=SERVICE_NAME, timeout=120)
            wait_serving(api_port, service=SERVICE_NAME, timeout=120)
            record(api_port, work, _first_answer)
            rows = compare(
                work,
                api_port,
                rounds=rounds,
                seconds=seconds,
                server_core=server_core,
                load_core=load_core,
            )
    return [replace(r, method=f"{r.method} (Redis)") for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(quick=args.quick)
    if args.json:
        print(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows]))
        return
    for r in rows:
        print(
            f"{r.method:28} {r.response_bytes:7} B  replica {r.real.rps:9,.0f} req/s "
            f"{r.real.mean_ms:7.2f} ms | ceiling {r.ceiling.rps:9,.0f} req/s "
            f"{r.ceiling.mean_ms:7.2f} ms | {r.ratio:6.1%}"
        )


if __name__ == "__main__":
    main()
