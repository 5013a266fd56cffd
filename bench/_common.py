"""Helpers shared by the benchmark scripts: processes, cores, clocks, memory.

Not a test module: nothing here is collected by pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH",
    "LOOPS",
    "PYTHON",
    "ROOT",
    "SYMBOLS",
    "Proc",
    "cores",
    "cpu_seconds",
    "decode_price",
    "encode_price",
    "free_port",
    "injection_key",
    "percentile",
    "pinned",
    "rss_bytes",
    "run_on_loop",
    "spawn",
    "wait_serving",
]

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable

# 20 symbols: the simulator's six known profiles and fourteen generic ones.
SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "EURUSD", "GBPUSD", "USDJPY", "XRPUSDT", "ADAUSDT",
    "DOGEUSDT", "AVAXUSDT", "DOTUSDT", "LINKUSDT", "LTCUSDT", "BCHUSDT", "TRXUSDT", "ATOMUSDT",
    "NEARUSDT", "APTUSDT", "ARBUSDT", "OPUSDT",
)  # fmt: skip

# Injection times travel in the trade price: microseconds modulo 10**10 (a
# 2.7-hour wrap), scaled so the price has at most 10 significant digits and
# comes back exactly from the double on the wire.
_WRAP_US = 10**10


def encode_price(time_ns: int) -> Decimal:
    return Decimal((time_ns // 1000) % _WRAP_US).scaleb(-4)


def decode_price(price: float, now_ns: int) -> tuple[int, int]:
    """The injection time carried by ``price`` (microseconds, as carried) and the
    nanoseconds between it and ``now_ns``."""
    sent_us = round(price * 10_000)
    return sent_us, ((now_ns // 1000 - sent_us) % _WRAP_US) * 1000


def injection_key(time_ns: int) -> int:
    """What :func:`decode_price` returns as the injection time of ``time_ns``."""
    return (time_ns // 1000) % _WRAP_US


async def ticks(rate: float) -> AsyncIterator[None]:
    """Yield ``rate`` times a second on the loop's clock; after falling behind
    by more than a tick, start again from now instead of bursting."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    due = loop.time()
    while True:
        due += period
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -period:
            due = loop.time()
        yield


LOOPS = ("asyncio", "uvloop")


def run_on_loop(main: Coroutine[Any, Any, None], argv: Sequence[str]) -> None:
    """Run ``main`` on the event loop named by ``--loop`` in ``argv`` (asyncio's by default)."""
    name = argv[argv.index("--loop") + 1] if "--loop" in argv else "asyncio"
    factory = None
    if name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    """``argv`` under ``taskset -c core`` when there is a core to pin to."""
    if core is None or shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process whose stdout is read line by line."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONPATH", str(ROOT / "server"))
        if env:
            full_env.update(env)
        # stderr goes to a file: a chatty child must never block on a full pipe.
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=full_env,
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def expect(self, prefix: str, timeout: float = 120.0) -> str:
        """The first stdout line starting with ``prefix`` (the rest of it)."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        skipped: list[str] = []
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if not line:
                raise RuntimeError(
                    f"{self.argv} ended before {prefix!r}:\n{''.join(skipped)[-2000:]}\n"
                    f"{self.error_text()}"
                )
            skipped.append(line)
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise TimeoutError(f"{self.argv}: no {prefix!r} within {timeout}s")

    def error_text(self, limit: int = 3000) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-limit:]

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout, self.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@contextlib.contextmanager
def spawn(argv: Sequence[str], *, env: dict[str, str] | None = None) -> Iterator[Proc]:
    proc = Proc(argv, env=env)
    try:
        yield proc
    finally:
        proc.stop()


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default)."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_serving(port: int, *, timeout: float = 60.0, service: str = "") -> float:
    """Poll grpc.health.v1 until ``service`` is SERVING; the monotonic time it was."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            except grpc.RpcError:
                pass
            time.sleep(0.01)
    raise TimeoutError(f"port {port} not SERVING ({service or 'liveness'}) within {timeout}s")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[index])
