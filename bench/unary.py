"""Unary benchmarks: GetPrice, BatchGetPrices(20) and GetCandles(500) under h2load.

    python bench/unary.py [--quick] [--json]

The real service (``bench/serve.py --feed sim``, 20 symbols, a day of
simulated history) and the ceiling (``bench/ceiling.py``: a no-op grpc.aio
handler returning the same response bytes) run as separate processes pinned
to one core; h2load runs pinned to the other. Runs alternate ceiling/real
per method so both see the same background load; the best of ``--rounds``
is kept for each. A real gRPC client first checks that each call ends with
grpc-status 0 and returns what it should, and again after the load.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, SYMBOLS, cores, pinned, spawn, wait_serving

from candlewire.api.server import SERVICE_NAME
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb


@dataclass
class H2Result:
    rps: float
    mean_ms: float
    requests: int
    failed: int


@dataclass
class UnaryRow:
    method: str
    response_bytes: int
    real: H2Result
    ceiling: H2Result

    @property
    def ratio(self) -> float:
        return self.real.rps / self.ceiling.rps


# (name, method, request, check of the decoded response)
CASES: list[tuple[str, str, Any, Callable[[bytes], str | None]]] = [
    (
        "GetPrice",
        "GetPrice",
        pb.GetPriceRequest(symbol="BTCUSDT"),
        lambda b: None if pb.GetPriceResponse.FromString(b).price.bid > 0 else "no bid",
    ),
    (
        "BatchGetPrices(20)",
        "BatchGetPrices",
        pb.BatchGetPricesRequest(symbols=SYMBOLS),
        lambda b: (
            None if len(pb.BatchGetPricesResponse.FromString(b).prices) == 20 else "not 20 prices"
        ),
    ),
    (
        "GetCandles(500)",
        "GetCandles",
        pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=500),
        lambda b: (
            None if len(pb.GetCandlesResponse.FromString(b).candles) == 500 else "not 500 candles"
        ),
    ),
]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def h2load(
    port: int,
    method: str,
    body: Path,
    *,
    seconds: float,
    core: int | None,
    conns: int,
    streams: int,
    headers: tuple[str, ...] = (),
) -> H2Result:
    argv = pinned(
        core,
        [
            "h2load",
            f"--duration={round(seconds)}",
            "--warm-up-time=1",
            f"--clients={conns}",
            f"--max-concurrent-streams={streams}",
            f"--data={body}",
            "--header=content-type: application/grpc",
            "--header=te: trailers",
            *(f"--header={h}" for h in headers),
            f"http://127.0.0.1:{port}/{SERVICE_NAME}/{method}",
        ],
    )
    done_run = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = done_run.stdout + done_run.stderr
    finished = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if not (finished and counts and mean):
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    done, succeeded = int(counts.group(2)), int(counts.group(3))
    return H2Result(float(finished.group(1)), _ms(mean.group(1)), done, done - succeeded)


def call_raw(port: int, method: str, request: Any) -> bytes:
    """One call with a real gRPC client: the raw response, or an exception if status != OK."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        rpc = channel.unary_unary(f"/{SERVICE_NAME}/{method}")
        response, call = rpc.with_call(request.SerializeToString(), timeout=10)
        if call.code() != grpc.StatusCode.OK:
            raise RuntimeError(f"{method}: grpc-status {call.code()}")
        return bytes(response)


@dataclass
class LoopRow:
    """One method on another event loop: ceiling and real, one round each, same run."""

    method: str
    loop: str
    real: H2Result
    ceiling: H2Result


def record(port: int, work: Path, answer: Callable[[int, str, Any], bytes] = call_raw) -> None:
    """Each case's checked response (``<method>.bin``, what the ceiling returns)
    and its gRPC-framed request (``<method>.req``, h2load's body) into ``work``."""
    for name, method, request, check in CASES:
        raw = answer(port, method, request)
        problem = check(raw)
        if problem:
            raise RuntimeError(f"{name}: {problem}")
        (work / f"{method}.bin").write_bytes(raw)
        message = request.SerializeToString()
        (work / f"{method}.req").write_bytes(struct.pack(">BI", 0, len(message)) + message)


def compare(
    work: Path,
    real_port: int,
    *,
    rounds: int,
    seconds: float,
    server_core: int | None,
    load_core: int | None,
) -> list[UnaryRow]:
    """Per case, the ceiling (started here on ``server_core``, returning the
    responses recorded in ``work``) and the real server alternating for
    ``rounds``, best of each; the real server is checked again after the load."""
    ceiling_argv = [PYTHON, "bench/ceiling.py", "--responses", str(work)]
    rows: list[UnaryRow] = []
    with spawn(pinned(server_core, ceiling_argv)) as ceiling:
        ceiling_port = int(ceiling.expect("PORT "))
        for name, method, request, check in CASES:
            body = work / f"{method}.req"
            best: dict[str, H2Result] = {}
            for _ in range(rounds):
                for label, port in (("ceiling", ceiling_port), ("real", real_port)):
                    result = h2load(
                        port, method, body, seconds=seconds, core=load_core, conns=4, streams=8
                    )
                    if result.failed:
                        raise RuntimeError(f"{name} on {label}: {result}")
                    if label not in best or result.rps > best[label].rps:
                        best[label] = result
            problem = check(call_raw(real_port, method, request))  # still status 0 after load
            if problem:
                raise RuntimeError(f"{name} after load: {problem}")
            size = len((work / f"{method}.bin").read_bytes())
            rows.append(UnaryRow(name, size, best["real"], best["ceiling"]))
    return rows


def run(*, quick: bool, other_loop: str | None = None) -> tuple[list[UnaryRow], list[LoopRow]]:
    """The unary rows on asyncio's loop; with ``other_loop``, each method again on it."""
    if shutil.which("h2load") is None:
        raise RuntimeError("h2load not found: apt-get install nghttp2-client")
    available = cores()
    server_core = available[0] if len(available) > 1 else None
    load_core = available[1] if len(available) > 1 else None
    seconds = 3.0 if quick else 8.0
    rounds = 1 if quick else 2
    rows: list[UnaryRow] = []
    loop_rows: list[LoopRow] = []
    with tempfile.TemporaryDirectory(prefix="cw-unary-") as tmp:
        work = Path(tmp)
        serve = [PYTHON, "bench/serve.py", "--feed", "sim", "--symbols", "20"]
        with spawn(pinned(server_core, serve)) as real:
            real_port = int(real.expect("PORT "))
            wait_serving(real_port, service=SERVICE_NAME, timeout=120)
            record(real_port, work)
            rows = compare(
                work,
                real_port,
                rounds=rounds,
                seconds=seconds,
                server_core=server_core,
                load_core=load_core,
            )
        if other_loop is not None:
            loop_rows = _other_loop(work, other_loop, server_core, load_core, seconds)
    return rows, loop_rows


def _other_loop(
    work: Path, loop: str, server_core: int | None, load_core: int | None, seconds: float
) -> list[LoopRow]:
    """Ceiling and real server on ``loop``, one round per method (same responses)."""
    out: list[LoopRow] = []
    serve = [PYTHON, "bench/serve.py", "--feed", "sim", "--symbols", "20", "--loop", loop]
    with spawn(pinned(server_core, serve)) as real:
        real_port = int(real.expect("PORT "))
        wait_serving(real_port, service=SERVICE_NAME, timeout=120)
        ceiling_argv = [PYTHON, "bench/ceiling.py", "--responses", str(work), "--loop", loop]
        with spawn(pinned(server_core, ceiling_argv)) as ceiling:
            ceiling_port = int(ceiling.expect("PORT "))
            for name, method, request, check in CASES:
                body = work / f"{method}.req"
                got = {
                    label: h2load(
                        port, method, body, seconds=seconds, core=load_core, conns=4, streams=8
                    )
                    for label, port in (("ceiling", ceiling_port), ("real", real_port))
                }
                problem = check(call_raw(real_port, method, request))
                if problem or got["real"].failed or got["ceiling"].failed:
                    raise RuntimeError(f"{name} on {loop}: {problem or got}")
                out.append(LoopRow(name, loop, got["real"], got["ceiling"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows, _ = run(quick=args.quick)
    if args.json:
        print(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows]))
        return
    for r in rows:
        print(
            f"{r.method:20} {r.response_bytes:7} B  real {r.real.rps:9,.0f} req/s "
            f"{r.real.mean_ms:7.2f} ms | ceiling {r.ceiling.rps:9,.0f} req/s "
            f"{r.ceiling.mean_ms:7.2f} ms | {r.ratio:6.1%}"
        )


if __name__ == "__main__":
    main()
