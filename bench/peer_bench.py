"""The peer (``bench/peer/app.py``, the FastAPI design Candlewire replaces), measured.

    python bench/peer_bench.py [--quick] [--json]
    python bench/peer_bench.py client --port P --n 1000 --warmup 2   # the fan-out client

A private ``redis-server`` (free port, temp dir, no persistence, pinned to the load core) holds
the quote cache; the peer runs under Uvicorn (uvloop, httptools, the ``websockets`` protocol, no
access log, one worker) pinned to the first core; every load generator is pinned to the second.

- REST: after checking that ``GET /api/price?symbol=BTCUSDT`` answers the expected JSON (and an
  unknown symbol a JSON 404), ``h2load --h1 -c 32`` (32 HTTP/1.1 connections, one request at a
  time each) for ``seconds``: requests/s and mean time per request.
- WebSocket fan-out: N subscribers of ``/ws/candles?symbol=BTCUSDT&interval=1m`` in one asyncio
  process (the ``client`` subcommand, the ``websockets`` library, no compression), the peer's
  ticker at 10 updates/s. Once every socket has its 720-candle history, a warm-up, then one
  window: messages delivered to all subscribers, the latency of each from the ``t_ns`` the update
  carries (its creation, before encoding) to its arrival at the client, and the peer's CPU
  seconds over the window (``/proc``), per delivered message. As ``fanout.py`` measures
  Candlewire's ``SubscribeCandles`` (injected updates at 10/s, latency and CPU per delivered
  message), so the figures compare.

Other benchmarks import :func:`run_rest` and :func:`run_fanout` (each starts its own Redis and
peer), or :func:`running_peer` with :func:`measure_rest` and :func:`measure_fanout` to measure
several things against one peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH,
    LOOPS,
    PYTHON,
    Proc,
    cores,
    cpu_seconds,
    free_port,
    percentile,
    pinned,
    run_on_loop,
    spawn,
)

__all__ = [
    "Peer",
    "measure_fanout",
    "measure_idle",
    "measure_rest",
    "run",
    "run_fanout",
    "run_rest",
    "running_peer",
]

RATE = 10.0
PRICE_PATH = "/api/price?symbol=BTCUSDT"
CANDLES_PATH = "/ws/candles?symbol=BTCUSDT&interval=1m"
HISTORY = 720


@dataclass
class Peer:
    proc: Proc
    port: int
    rate: float
    load_core: int | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _cores() -> tuple[int | None, int | None]:
    available = cores()
    if len(available) > 1:
        return available[0], available[1]
    return None, None


def _machine_busy() -> tuple[int, int]:
    """Busy and total jiffies of all cores since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Cores' worth of CPU the whole machine used between two :func:`_machine_busy` readings:
    well above the peer's and the load generator's own figures means other work shared it."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * len(os.sched_getaffinity(0)) if total else 0.0


def _get(url: str) -> tuple[int, str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.headers.get("content-type", ""), json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type", ""), json.loads(error.read())


def _wait_answering(peer: Peer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if peer.proc.popen.poll() is not None:
            raise RuntimeError(f"peer ended:\n{peer.proc.error_text()}")
        try:
            if _get(peer.url(PRICE_PATH))[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"peer not answering within {timeout}s:\n{peer.proc.error_text()}")
        time.sleep(0.05)


@contextmanager
def running_peer(
    *,
    rate: float = RATE,
    server_core: int | None = None,
    load_core: int | None = None,
) -> Iterator[Peer]:
    """A private redis-server and the peer on it, answering; cores default to the first two."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    if server_core is None and load_core is None:
        server_core, load_core = _cores()
    with tempfile.TemporaryDirectory(prefix="cw-peer-") as tmp:
        redis_port, port = free_port(), free_port()
        redis_argv = [server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"]  # fmt: skip
        peer_argv = [PYTHON, "-m", "uvicorn", "app:app", "--app-dir", str(BENCH / "peer"),
                     "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
                     "--http", "httptools", "--ws", "websockets", "--no-access-log",
                     "--workers", "1", "--log-level", "warning"]  # fmt: skip
        env = {"PEER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PEER_RATE": str(rate)}
        with spawn(pinned(load_core, redis_argv)) as redis_proc:
            _wait_redis(redis_port, redis_proc)
            with spawn(pinned(server_core, peer_argv), env=env) as proc:
                peer = Peer(proc, port, rate, load_core)
                _wait_answering(peer)
                yield peer


def _wait_redis(port: int, proc: Proc, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server not answering:\n{proc.error_text()}")
        time.sleep(0.05)


def check_price(peer: Peer) -> dict[str, Any]:
    """The JSON ``GET /api/price`` answers, checked; raises if it is not what it should be."""
    status, content_type, body = _get(peer.url(PRICE_PATH))
    if status != 200 or not content_type.startswith("application/json"):
        raise RuntimeError(f"GET {PRICE_PATH}: {status} {content_type} {body!r}")
    if set(body) != {"symbol", "bid", "ask", "last", "event_time"} or body["symbol"] != "BTCUSDT":
        raise RuntimeError(f"GET {PRICE_PATH}: unexpected body {body!r}")
    if not 0 < body["bid"] < body["ask"] or not isinstance(body["event_time"], int):
        raise RuntimeError(f"GET {PRICE_PATH}: unexpected values {body!r}")
    status, content_type, missing = _get(peer.url("/api/price?symbol=NOPE"))
    if status != 404 or not content_type.startswith("application/json"):
        raise RuntimeError(f"unknown symbol: {status} {content_type} {missing!r}")
    return dict(body)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def measure_rest(peer: Peer, seconds: float = 8.0, *, connections: int = 32) -> dict[str, Any]:
    """``h2load --h1`` on ``GET /api/price?symbol=BTCUSDT``, pinned to the load core."""
    if shutil.which("h2load") is None:
        raise RuntimeError("h2load not found: apt-get install nghttp2-client")
    body = check_price(peer)
    argv = pinned(
        peer.load_core,
        ["h2load", "--h1", f"--clients={connections}", f"--duration={round(seconds)}",
         "--warm-up-time=1", peer.url(PRICE_PATH)],
    )  # fmt: skip
    cpu, began, machine = cpu_seconds(peer.pid), time.monotonic(), _machine_busy()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    server_cpu = (cpu_seconds(peer.pid) - cpu) / (time.monotonic() - began)
    machine_cores = _busy_cores(machine, _machine_busy())
    out = done.stdout + done.stderr
    finished = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    statuses = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if not (finished and counts and statuses and mean):
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    requests, succeeded = int(counts.group(2)), int(counts.group(3))
    # (h2load's 2xx count can miss the one request in flight at the end of the warm-up)
    if succeeded != requests or any(int(count) for count in statuses.groups()):
        raise RuntimeError(f"h2load: failed requests:\n{out}")
    check_price(peer)
    return {
        "rps": float(finished.group(1)),
        "mean_ms": float(mean.group(1)) * _UNITS[mean.group(2)],
        "requests": requests,
        "connections": connections,
        "seconds": seconds,
        "server_cpu": server_cpu,
        "machine_cores": machine_cores,
        "response": body,
    }


def measure_fanout(
    peer: Peer,
    subscribers: int,
    seconds: float = 10.0,
    *,
    warmup: float = 2.0,
    client_loop: str = "asyncio",
) -> dict[str, Any]:
    """``subscribers`` sockets on BTCUSDT 1m, one window of ``seconds`` after a warm-up."""
    argv = [PYTHON, str(Path(__file__).resolve()), "client", "--port", str(peer.port),
            "--n", str(subscribers), "--warmup", str(warmup), "--loop", client_loop]  # fmt: skip
    with spawn(pinned(peer.load_core, argv)) as client:
        client.expect("READY", timeout=300)
        client.send(f"MEASURE {seconds}")
        client.expect("MEASURING", timeout=60)
        cpu, began, machine = cpu_seconds(peer.pid), time.monotonic(), _machine_busy()
        line = client.expect("{", timeout=60 + seconds)
        window = time.monotonic() - began
        used = cpu_seconds(peer.pid) - cpu
        machine_cores = _busy_cores(machine, _machine_busy())
        client.send("QUIT")
    result: dict[str, Any] = json.loads("{" + line)
    if result.get("error_count"):
        raise RuntimeError(f"peer fan-out client: {result}")
    messages = int(result["messages"])
    result["server_cpu"] = used / window
    result["server_cpu_s"] = used
    result["machine_cores"] = machine_cores
    result["cpu_us_per_msg"] = used / messages * 1e6 if messages else float("nan")
    result["expected_msgs_per_s"] = subscribers * peer.rate
    return result


def measure_idle(peer: Peer, seconds: float = 3.0) -> float:
    """The peer's CPU (fraction of a core) with no subscriber and no request: its tickers."""
    cpu, began = cpu_seconds(peer.pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(peer.pid) - cpu) / (time.monotonic() - began)


def run_rest(seconds: float = 8.0) -> dict[str, Any]:
    with running_peer() as peer:
        return measure_rest(peer, seconds)


def run_fanout(subscribers: int, seconds: float = 10.0) -> dict[str, Any]:
    with running_peer() as peer:
        return measure_fanout(peer, subscribers, seconds)


def run(*, quick: bool = False, client_loop: str = "asyncio") -> dict[str, Any]:
    """REST (best of two runs, one with ``quick``) and fan-out to 100 and 1,000 subscribers,
    against one peer."""
    rest_s, fanout_s, warmup = (3.0, 4.0, 1.5) if quick else (8.0, 10.0, 2.0)
    with running_peer() as peer:
        idle = measure_idle(peer)
        tries = [measure_rest(peer, rest_s) for _ in range(1 if quick else 2)]
        rest = max(tries, key=lambda r: float(r["rps"])) | {"rounds_rps": [r["rps"] for r in tries]}
        fanout = {
            n: measure_fanout(peer, n, fanout_s, warmup=warmup, client_loop=client_loop)
            for n in (100, 1000)
        }
    for r in fanout.values():  # less what the tickers cost with no one connected
        r["net_cpu_us_per_msg"] = (r["server_cpu"] - idle) / r["msgs_per_s"] * 1e6
    return {"idle_server_cpu": idle, "rest": rest, "fanout": fanout}


# The fan-out client (a separate process, on the load core).


class _Stats:
    def __init__(self) -> None:
        self.ready = 0
        self.measuring = False
        self.messages = 0
        self.latencies: list[int] = []
        self.errors: list[str] = []


async def _subscriber(
    url: str, stats: _Stats, all_ready: asyncio.Event, n: int, gate: asyncio.Semaphore
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    try:
        async with gate:
            websocket = await connect(
                url, compression=None, max_size=2**24, ping_interval=None, open_timeout=120
            )
            history = json.loads(await websocket.recv())
        async with websocket:
            if not isinstance(history, list) or len(history) != HISTORY:
                stats.errors.append(f"history of {len(history)} candles")
                return
            stats.ready += 1
            if stats.ready == n:
                all_ready.set()
            async for message in websocket:
                now = time.time_ns()
                if stats.measuring:
                    stats.messages += 1
                    stats.latencies.append(now - json.loads(message)["t_ns"])
    except ConnectionClosed as error:
        stats.errors.append(f"closed: {error}")
    except OSError as error:
        stats.errors.append(f"{type(error).__name__}: {error}")


async def _measure(stats: _Stats, seconds: float) -> dict[str, Any]:
    stats.messages, stats.latencies = 0, []
    print("MEASURING", flush=True)
    stats.measuring = True
    began, cpu = time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    stats.measuring = False
    elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
    lat = sorted(stats.latencies)
    return {
        "messages": stats.messages,
        "seconds": elapsed,
        "msgs_per_s": stats.messages / elapsed,
        "client_cpu": cpu / elapsed,
        "p50_ms": percentile(lat, 0.50) / 1e6,
        "p99_ms": percentile(lat, 0.99) / 1e6,
        "max_ms": (lat[-1] / 1e6) if lat else float("nan"),
        "errors": stats.errors[:5],
        "error_count": len(stats.errors),
    }


async def _client_main(args: argparse.Namespace) -> None:
    url = f"ws://127.0.0.1:{args.port}{CANDLES_PATH}"
    stats, all_ready = _Stats(), asyncio.Event()
    gate = asyncio.Semaphore(50)  # connections being opened at once
    tasks = [
        asyncio.create_task(_subscriber(url, stats, all_ready, args.n, gate)) for _ in range(args.n)
    ]
    started = time.monotonic()
    try:
        await asyncio.wait_for(all_ready.wait(), 240)
    except TimeoutError:
        print(json.dumps({"error": f"{stats.ready}/{args.n} ready", "errors": stats.errors[:5]}))
        return
    connect_s = time.monotonic() - started
    print("READY", flush=True)
    await asyncio.sleep(args.warmup)
    loop = asyncio.get_running_loop()
    while True:
        command = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not command or command[0] != "MEASURE":
            break
        result = await _measure(stats, float(command[1]))
        print(json.dumps({"n": args.n, "connect_s": connect_s} | result), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _print(report: dict[str, Any]) -> None:
    rest = report["rest"]
    print(f"peer idle (tickers only): server CPU {report['idle_server_cpu']:.1%}")
    print(
        f"REST GET {PRICE_PATH}  h2load --h1 -c {rest['connections']}: "
        f"{rest['rps']:9,.0f} req/s  mean {rest['mean_ms']:6.2f} ms  "
        f"server CPU {rest['server_cpu']:.0%}  machine {rest['machine_cores']:.2f} cores"
    )
    print(
        f"{'subscribers':>11} {'msg/s':>9} {'expected':>9} {'CPU us/msg':>10} {'net':>5} "
        f"{'srv CPU':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'cli CPU':>7} {'machine':>7}"
    )
    for n, r in report["fanout"].items():
        print(
            f"{n:>11} {r['msgs_per_s']:>9,.0f} {r['expected_msgs_per_s']:>9,.0f} "
            f"{r['cpu_us_per_msg']:>10.1f} {r['net_cpu_us_per_msg']:>5.1f} "
            f"{r['server_cpu']:>7.0%} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {r['max_ms']:>7.2f} {r['client_cpu']:>7.0%} "
            f"{r['machine_cores']:>7.2f}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        parser = argparse.ArgumentParser(prog="peer_bench.py client")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--n", type=int, default=100)
        parser.add_argument("--warmup", type=float, default=2.0)
        parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="event loop")
        args = parser.parse_args(sys.argv[2:])
        run_on_loop(_client_main(args), sys.argv)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--client-loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args()
    report = run(quick=args.quick, client_loop=args.client_loop)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)


if __name__ == "__main__":
    main()
