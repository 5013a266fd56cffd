"""Streaming fan-out: N subscribers, 10 updates/s per series, latency and throughput.

    python bench/fanout.py [--quick] [--json]

Scenarios: 100 and 1,000 subscribers on one series (``same``: BTCUSDT 1m,
trades injected on BTCUSDT only) and spread over the 320 series of 20
symbols x 16 intervals (``spread``: trades injected on all 20 symbols). The
real server is ``bench/serve.py --feed inject`` (trades at 10/s per symbol
through aggregation, store and hub, so every series of an injected symbol
gets 10 updates/s); the ceiling is ``bench/ceiling.py`` (a ticker fanning
one pre-built message out to every stream at the same rate). Both run on one
core, the client process on the other; they run one after the other in the
same run. With ``slow``, one extra subscriber on the same series reads a
message a second on a fixed 64 KiB window.

Also measures the server's resident memory per idle subscriber (1,000 open
streams, no updates).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    Proc,
    cores,
    cpu_seconds,
    pinned,
    rss_bytes,
    spawn,
    wait_serving,
)

from candlewire.api.server import SERVICE_NAME


@dataclass
class FanoutRow:
    n: int
    mode: str
    real: dict[str, Any]
    ceiling: dict[str, Any]
    slow: dict[str, Any] | None = None

    @property
    def ratio(self) -> float:
        return float(self.real["msgs_per_s"]) / float(self.ceiling["msgs_per_s"])


@dataclass
class FanoutReport:
    rows: list[FanoutRow] = field(default_factory=list)
    idle_bytes_per_subscriber: float = float("nan")


def _cores() -> tuple[int | None, int | None]:
    available = cores()
    if len(available) > 1:
        return available[0], available[1]
    return None, None


@contextmanager
def _real_server(core: int | None, inject: int, rate: float) -> Iterator[tuple[Proc, int]]:
    argv = [PYTHON, "bench/serve.py", "--feed", "inject", "--symbols", "20"]
    argv += ["--inject", str(inject), "--rate", str(rate)]
    with spawn(pinned(core, argv)) as proc:
        port = int(proc.expect("PORT "))
        if rate > 0:
            wait_serving(port, service=SERVICE_NAME, timeout=60)
        yield proc, port


@contextmanager
def _ceiling(core: int | None, rate: float) -> Iterator[tuple[Proc, int]]:
    with spawn(pinned(core, [PYTHON, "bench/ceiling.py", "--rate", str(rate)])) as proc:
        yield proc, int(proc.expect("PORT "))


def _client(
    core: int | None,
    server: int,
    port: int,
    n: int,
    mode: str,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Run one client against ``port``; ``server`` is the server's pid (for its CPU use)."""
    argv = [PYTHON, "bench/fanout_client.py", "--port", str(port), "--n", str(n)]
    argv += ["--mode", mode, "--warmup", str(warmup), "--duration", str(duration)]
    with spawn(pinned(core, argv)) as proc:
        proc.expect("MEASURING", timeout=120 + warmup)
        cpu, began = cpu_seconds(server), time.monotonic()
        line = proc.expect("{", timeout=60 + duration)
        server_cpu = (cpu_seconds(server) - cpu) / (time.monotonic() - began)
        result: dict[str, Any] = json.loads("{" + line)
        result["server_cpu"] = server_cpu
    if "error" in result or result.get("error_count"):
        raise RuntimeError(f"fan-out client: {result}")
    return result


def run(*, quick: bool) -> FanoutReport:
    server_core, client_core = _cores()
    rate = 10.0
    warmup, duration = (1.5, 3.0) if quick else (2.0, 8.0)
    report = FanoutReport()
    same = [100, 1000]
    with _ceiling(server_core, rate) as (ceiling, ceiling_port):
        ceilings = {
            n: _client(client_core, ceiling.pid, ceiling_port, n, "same", warmup, duration)
            for n in same
        }
        with _real_server(server_core, 1, rate) as (server, port):
            for n in same:
                real = _client(client_core, server.pid, port, n, "same", warmup, duration)
                row = FanoutRow(n, "same", real, ceilings[n])
                if n == 1000 or not quick:
                    with ExitStack() as stack:
                        argv = [PYTHON, "bench/fanout_client.py", "--port", str(port)]
                        slow = stack.enter_context(spawn(pinned(client_core, [*argv, "--slow"])))
                        slow.expect("READY")
                        time.sleep(1.0)
                        row.slow = _client(
                            client_core, server.pid, port, n, "same", warmup, duration
                        )
                report.rows.append(row)
        spread = [1000] if quick else [100, 1000]
        with _real_server(server_core, 20, rate) as (server, port):
            for n in spread:
                real = _client(client_core, server.pid, port, n, "spread", warmup, duration)
                report.rows.append(FanoutRow(n, "spread", real, ceilings[n]))
    # Memory per idle subscriber: 1,000 streams that receive nothing.
    idle_n = 1000
    with _real_server(server_core, 0, 0.0) as (server, port):
        wait_serving(port, timeout=30)
        time.sleep(0.5)
        before = rss_bytes(server.pid)
        argv = [PYTHON, "bench/fanout_client.py", "--port", str(port), "--n", str(idle_n)]
        with spawn(pinned(client_core, [*argv, "--idle"])) as client:
            client.expect("READY", timeout=120)
            time.sleep(1.0)
            after = rss_bytes(server.pid)
        report.idle_bytes_per_subscriber = (after - before) / idle_n
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report = run(quick=args.quick)
    for r in report.rows:
        print(
            f"{r.n:5} {r.mode:6} real {r.real['msgs_per_s']:8,.0f} msg/s "
            f"p50 {r.real['p50_ms']:6.2f} p99 {r.real['p99_ms']:6.2f} "
            f"max {r.real['max_ms']:7.2f} ms"
            f" | ceiling {r.ceiling['msgs_per_s']:8,.0f} msg/s p99 {r.ceiling['p99_ms']:6.2f} ms"
            f" | {r.ratio:6.1%} | cpu srv {r.real['server_cpu']:.0%}/{r.ceiling['server_cpu']:.0%}"
            f" cli {r.real['client_cpu']:.0%}/{r.ceiling['client_cpu']:.0%}"
            + (f" | with slow p99 {r.slow['p99_ms']:6.2f} ms" if r.slow else "")
        )
    print(f"idle subscriber: {report.idle_bytes_per_subscriber:,.0f} bytes of server RSS")


if __name__ == "__main__":
    main()
