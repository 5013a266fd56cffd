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
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    LOOPS,
    PYTHON,
    Proc,
    cores,
    cpu_seconds,
    percentile,
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
    loop: str = "asyncio"
    rows: list[FanoutRow] = field(default_factory=list)
    other_loop: dict[str, Any] = field(default_factory=dict)
    """The same-series figures on the other event loop (ceiling and real), same run."""
    idle_bytes_per_subscriber: float = float("nan")


def _cores() -> tuple[int | None, int | None]:
    available = cores()
    if len(available) > 1:
        return available[0], available[1]
    return None, None


@contextmanager
def _real_server(
    core: int | None, inject: int, rate: float, loop: str
) -> Iterator[tuple[Proc, int]]:
    argv = [PYTHON, "bench/serve.py", "--feed", "inject", "--symbols", "20"]
    argv += ["--inject", str(inject), "--rate", str(rate), "--loop", loop]
    with spawn(pinned(core, argv)) as proc:
        port = int(proc.expect("PORT "))
        if rate > 0:
            wait_serving(port, service=SERVICE_NAME, timeout=60)
        yield proc, port


@contextmanager
def _ceiling(core: int | None, rate: float, loop: str) -> Iterator[tuple[Proc, int]]:
    argv = [PYTHON, "bench/ceiling.py", "--rate", str(rate), "--loop", loop]
    with spawn(pinned(core, argv)) as proc:
        yield proc, int(proc.expect("PORT "))


def _summary(latencies_ns: Sequence[int], prefix: str = "") -> dict[str, float]:
    lat = sorted(latencies_ns)
    return {
        f"{prefix}p50_ms": percentile(lat, 0.50) / 1e6,
        f"{prefix}p99_ms": percentile(lat, 0.99) / 1e6,
        f"{prefix}max_ms": (lat[-1] / 1e6) if lat else float("nan"),
    }


class _Client:
    """A running ``fanout_client.py`` whose streams stay open across windows."""

    def __init__(self, proc: Proc, server: Proc, *, notes_hub: bool, work: Path) -> None:
        self.proc, self.server, self.notes_hub, self.work = proc, server, notes_hub, work
        self.windows = 0

    def measure(self, seconds: float) -> dict[str, Any]:
        """One window: the client's figures, its raw samples, and the latency from hub entry.

        ``latencies`` (end to end) and ``hub_latencies`` are kept in the result
        for pooling; callers drop them before the result is stored.
        """
        self.windows += 1
        samples = self.work / f"samples-{self.windows}.bin"
        self.proc.send(f"MEASURE {seconds} {samples}")
        self.proc.expect("MEASURING", timeout=60)
        cpu, began = cpu_seconds(self.server.pid), time.monotonic()
        line = self.proc.expect("{", timeout=60 + seconds)
        server_cpu = (cpu_seconds(self.server.pid) - cpu) / (time.monotonic() - began)
        result: dict[str, Any] = json.loads("{" + line)
        if "error" in result or result.get("error_count"):
            raise RuntimeError(f"fan-out client: {result}")
        result["server_cpu"] = server_cpu
        raw = array("q", samples.read_bytes())
        half = len(raw) // 2
        sent, latencies = raw[:half], raw[half:]
        result["latencies"] = latencies
        if self.notes_hub:
            path = self.work / "hub.json"
            self.server.send(f"HUB {path}")
            self.server.expect("HUBDONE", timeout=30)
            entered = dict(json.loads(path.read_text()))
            hub = [lat - entered[s] for s, lat in zip(sent, latencies, strict=True) if s in entered]
            result["hub_samples"] = len(hub)
        else:  # the ceiling builds each message at its tick: hub entry is injection
            hub = list(latencies)
            result["hub_samples"] = len(hub)
        result["hub_latencies"] = hub
        result.update(_summary(hub, "hub_"))
        return result


def _public(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("latencies", "hub_latencies")}


@contextmanager
def _client(
    core: int | None, server: Proc, port: int, n: int, mode: str, warmup: float, *, hub: bool
) -> Iterator[_Client]:
    argv = [PYTHON, "bench/fanout_client.py", "--port", str(port), "--n", str(n)]
    argv += ["--mode", mode, "--warmup", str(warmup)]
    with (
        tempfile.TemporaryDirectory(prefix="cw-fanout-") as work,
        spawn(pinned(core, argv)) as proc,
    ):
        proc.expect("READY", timeout=120)
        yield _Client(proc, server, notes_hub=hub, work=Path(work))


def _once(
    core: int | None,
    server: Proc,
    port: int,
    n: int,
    mode: str,
    warmup: float,
    seconds: float,
    *,
    hub: bool,
) -> dict[str, Any]:
    with _client(core, server, port, n, mode, warmup, hub=hub) as client:
        return _public(client.measure(seconds))


def _slow_trials(
    client: _Client, core: int | None, port: int, *, trials: int, window: float
) -> dict[str, Any]:
    """Interleaved windows without and with one slow subscriber, same streams, same server.

    Each trial is a pair of windows (order alternating, ABBA, so a drift in
    the machine's load does not favour one side); the change of each pair's
    p99 is one observation. Reported: the median change and its range over
    the trials, and the p99 of all windows of each kind pooled.
    """
    pairs: list[dict[str, dict[str, Any]]] = []
    pooled: dict[str, list[int]] = {"without": [], "with": []}
    slow_argv = [PYTHON, "bench/fanout_client.py", "--port", str(port), "--slow"]
    for trial in range(trials):
        order = ("without", "with") if trial % 2 == 0 else ("with", "without")
        pair: dict[str, dict[str, Any]] = {}
        for kind in order:
            if kind == "without":
                pair[kind] = client.measure(window)
                continue
            with spawn(pinned(core, slow_argv)) as slow:
                slow.expect("READY", timeout=60)
                time.sleep(2.0)  # its 1 KiB window fills within a second
                pair[kind] = client.measure(window)
        for kind, result in pair.items():
            pooled[kind] += result.pop("latencies")
            result.pop("hub_latencies")
        pairs.append(pair)
    changes = sorted(p["with"]["p99_ms"] / p["without"]["p99_ms"] - 1 for p in pairs)
    without, with_slow = _summary(pooled["without"]), _summary(pooled["with"])
    return {
        "trials": trials,
        "window_s": window,
        "median_change": statistics.median(changes),
        "min_change": changes[0],
        "max_change": changes[-1],
        "pooled_without_p99_ms": without["p99_ms"],
        "pooled_with_p99_ms": with_slow["p99_ms"],
        "pooled_change": with_slow["p99_ms"] / without["p99_ms"] - 1,
        "pairs": [
            {k: {"p99_ms": v["p99_ms"], "samples": v["samples"]} for k, v in p.items()}
            for p in pairs
        ],
    }


def _ceilings(
    server_core: int | None,
    client_core: int | None,
    ns: Sequence[int],
    loop: str,
    warmup: float,
    duration: float,
) -> dict[int, dict[str, Any]]:
    with _ceiling(server_core, 10.0, loop) as (ceiling, port):
        return {
            n: _once(client_core, ceiling, port, n, "same", warmup, duration, hub=False) for n in ns
        }


def run(*, quick: bool, loop: str = "asyncio", other_loop: str | None = None) -> FanoutReport:
    """Fan-out on ``loop``; with ``other_loop``, the same-series rows also on that loop."""
    server_core, client_core = _cores()
    rate = 10.0
    warmup, duration = (1.5, 3.0) if quick else (2.0, 8.0)
    trials, window = (3, 2.0) if quick else (5, 3.0)
    report = FanoutReport(loop=loop)
    same = [100, 1000]
    if other_loop is not None:
        other: dict[str, Any] = {"loop": other_loop}
        other["ceiling"] = _ceilings(server_core, client_core, same, other_loop, warmup, duration)
        with _real_server(server_core, 1, rate, other_loop) as (server, port):
            other["real"] = {
                n: _once(client_core, server, port, n, "same", warmup, duration, hub=True)
                for n in same
            }
        report.other_loop = other
    ceilings = _ceilings(server_core, client_core, same, loop, warmup, duration)
    with _real_server(server_core, 1, rate, loop) as (server, port):
        for n in same:
            with _client(client_core, server, port, n, "same", warmup, hub=True) as client:
                real = _public(client.measure(duration))
                row = FanoutRow(n, "same", real, ceilings[n])
                row.slow = _slow_trials(client, client_core, port, trials=trials, window=window)
            report.rows.append(row)
    spread = [1000] if quick else [100, 1000]
    with _real_server(server_core, 20, rate, loop) as (server, port):
        for n in spread:
            real = _once(client_core, server, port, n, "spread", warmup, duration, hub=True)
            report.rows.append(FanoutRow(n, "spread", real, ceilings[n]))
    # Memory per idle subscriber: 1,000 streams that receive nothing.
    idle_n = 1000
    with _real_server(server_core, 0, 0.0, loop) as (server, port):
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
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--other-loop", choices=LOOPS)
    args = parser.parse_args()
    report = run(quick=args.quick, loop=args.loop, other_loop=args.other_loop)
    for r in report.rows:
        print(
            f"{r.n:5} {r.mode:6} real {r.real['msgs_per_s']:8,.0f} msg/s "
            f"p50 {r.real['p50_ms']:6.2f} p99 {r.real['p99_ms']:6.2f} "
            f"max {r.real['max_ms']:7.2f} ms (hub p99 {r.real['hub_p99_ms']:6.2f})"
            f" | ceiling {r.ceiling['msgs_per_s']:8,.0f} msg/s p99 {r.ceiling['p99_ms']:6.2f} ms"
            f" | {r.ratio:6.1%} | cpu srv {r.real['server_cpu']:.0%}/{r.ceiling['server_cpu']:.0%}"
            f" cli {r.real['client_cpu']:.0%}/{r.ceiling['client_cpu']:.0%}"
            + (
                f" | slow: median {r.slow['median_change']:+.0%} "
                f"[{r.slow['min_change']:+.0%}, {r.slow['max_change']:+.0%}]"
                if r.slow
                else ""
            )
        )
    for kind in ("ceiling", "real"):
        for n, r in report.other_loop.get(kind, {}).items():
            print(
                f"{n:5} same on {report.other_loop['loop']} {kind}: p99 {r['p99_ms']:6.2f} ms "
                f"{r['msgs_per_s']:8,.0f} msg/s cpu srv {r['server_cpu']:.0%}"
            )
    print(f"idle subscriber: {report.idle_bytes_per_subscriber:,.0f} bytes of server RSS")


if __name__ == "__main__":
    main()
