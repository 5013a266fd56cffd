"""The HTTP face against native gRPC and against the design it replaces, in one run.

    python bench/http_face.py [--quick] [--json]

Unary: ``GetPrice`` for BTCUSDT on the real service (``serve.py --feed sim``,
20 symbols, HTTP port on) pinned to one core, h2load on the other:

- native gRPC on the gRPC port (h2c, 4 connections x 8 streams);
- grpc-web (``application/grpc-web+proto``) on the HTTP port, over HTTP/2
  (h2c, 4 x 8) and over HTTP/1.1 (32 connections);
- Connect with JSON (``POST``, ``content-type: application/json``, the body
  ``{"symbol":"BTCUSDT"}``: the ``curl`` call of the README) and Connect
  ``GET`` (``?encoding=json&message=...``), both over HTTP/1.1 (32 connections);
- the peer (``bench/peer``: FastAPI on Uvicorn with uvloop and httptools,
  ``GET /api/price?symbol=BTCUSDT`` read from Redis as JSON), HTTP/1.1, 32
  connections, pinned to the same core.

Each call is checked first (status, and the answer holds a price). Rounds
alternate between the rows; the best round of each counts. Targets: every
HTTP row at least 1.5x the peer's requests/s and at least 70 % of native gRPC.

Fan-out: 100 and 1,000 grpc-web ``SubscribeCandles`` streams (one HTTP/1.1
connection each, ``fanout_web_client.py``) on one series receiving 10
updates/s (``serve.py --feed inject``), against the peer's WebSocket
broadcast of 10 updates/s to as many sockets (JSON encoded once per update).
Reported: server CPU per delivered message (the server process's CPU over
the window divided by the messages delivered) and latency p50/p99 from
where the update is made (the peer's ticker; Candlewire's hub entry, as
``fanout.py`` measures it). Targets: CPU per message and p99 no higher than
the peer's.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_bench
from _common import PYTHON, Proc, cores, pinned, spawn, wait_serving
from fanout import _Client, _public

from candlewire.api.server import SERVICE_NAME
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

PRICE_PATH = f"/{SERVICE_NAME}/GetPrice"
REQUEST = pb.GetPriceRequest(symbol="BTCUSDT").SerializeToString()
GRPC_BODY = b"\0" + len(REQUEST).to_bytes(4, "big") + REQUEST
JSON_BODY = b'{"symbol":"BTCUSDT"}'
GET_QUERY = "?" + urllib.parse.urlencode(
    {"connect": "v1", "encoding": "json", "message": JSON_BODY.decode()}
)


@dataclass
class Load:
    rps: float
    mean_ms: float
    done: int
    failed: int


def _ms(text: str) -> float:
    """h2load's ``412us``, ``3.2ms`` or ``1.1s``, in milliseconds."""
    value = float(re.sub(r"[a-z]+$", "", text))
    if text.endswith("us"):
        return value / 1000
    if text.endswith("ms"):
        return value
    return value * 1000 if text.endswith("s") else value


def h2load(
    url: str,
    *,
    seconds: float,
    core: int | None,
    h1: bool,
    conns: int,
    streams: int = 1,
    body: Path | None = None,
    headers: tuple[str, ...] = (),
) -> Load:
    argv = [
        "h2load",
        f"--duration={round(seconds)}",
        "--warm-up-time=1",
        f"--clients={conns}",
        f"--max-concurrent-streams={streams}",
        *(["--h1"] if h1 else []),
        *([f"--data={body}"] if body is not None else []),
        *(f"--header={h}" for h in headers),
        url,
    ]
    run = subprocess.run(pinned(core, argv), capture_output=True, text=True, timeout=seconds + 60)
    out = run.stdout + run.stderr
    finished = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if not (finished and counts and mean):
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    done, succeeded = int(counts.group(2)), int(counts.group(3))
    return Load(float(finished.group(1)), _ms(mean.group(1)), done, done - succeeded)


@dataclass
class Row:
    name: str
    url: str
    h1: bool
    conns: int
    streams: int = 1
    body: bytes | None = None
    headers: tuple[str, ...] = ()


def _rows(grpc_port: int, http_port: int, peer_port: int) -> list[Row]:
    web = f"http://127.0.0.1:{http_port}{PRICE_PATH}"
    grpc_web = ("content-type: application/grpc-web+proto", "x-grpc-web: 1")
    return [
        Row(
            "native gRPC (h2c)",
            f"http://127.0.0.1:{grpc_port}{PRICE_PATH}",
            False,
            4,
            8,
            GRPC_BODY,
            ("content-type: application/grpc", "te: trailers"),
        ),
        Row("grpc-web, HTTP/2 (h2c)", web, False, 4, 8, GRPC_BODY, grpc_web),
        Row("grpc-web, HTTP/1.1", web, True, 32, 1, GRPC_BODY, grpc_web),
        Row(
            "Connect JSON POST, HTTP/1.1",
            web,
            True,
            32,
            1,
            JSON_BODY,
            ("content-type: application/json",),
        ),
        Row("Connect GET, HTTP/1.1", web + GET_QUERY, True, 32),
        Row(
            "peer REST (FastAPI)",
            f"http://127.0.0.1:{peer_port}/api/price?symbol=BTCUSDT",
            True,
            32,
        ),
    ]


def _check(row: Row) -> None:
    """One call, as the load will make it: an OK status and a price in the answer."""
    headers = dict(h.split(": ", 1) for h in row.headers)
    if headers.get("content-type") == "application/grpc":
        target = urllib.parse.urlsplit(row.url).netloc
        with grpc.insecure_channel(target) as channel:
            reply = channel.unary_unary(PRICE_PATH)(REQUEST, timeout=10)
        if not pb.GetPriceResponse.FromString(reply).price.bid:
            raise RuntimeError(f"{row.name}: no bid in the answer")
        return
    http2 = not row.h1
    with httpx.Client(http2=http2, http1=not http2, timeout=10) as client:
        if row.body is None:
            response = client.get(row.url, headers=headers)
        else:
            response = client.post(row.url, content=row.body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"{row.name}: HTTP {response.status_code}: {response.text[:200]}")
    if "grpc" in headers.get("content-type", ""):
        status = response.headers.get("grpc-status") or (
            "0" if b"grpc-status:0" in response.content.replace(b" ", b"") else None
        )
        if status != "0":
            raise RuntimeError(f"{row.name}: grpc-status {status}")
        return
    answer = response.json()
    if not (answer.get("price") or answer.get("bid")):
        raise RuntimeError(f"{row.name}: no price in {answer}")


@contextmanager
def _service(core: int | None, feed: list[str]) -> Iterator[tuple[Proc, int, int]]:
    # On uvloop, as `candlewire serve` runs (CANDLEWIRE_EVENT_LOOP); the peer runs on it too.
    argv = [PYTHON, "bench/serve.py", *feed, "--symbols", "20", "--http-port", "0"]
    argv += ["--loop", "uvloop"]
    with spawn(pinned(core, argv)) as proc:
        port = int(proc.expect("PORT "))
        http_port = int(proc.expect("HTTP "))
        yield proc, port, http_port


def unary(*, quick: bool) -> dict[str, Any]:
    server_core, load_core = _cores()
    seconds, rounds = (4.0, 2) if quick else (8.0, 3)
    results: dict[str, list[Load]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="cw-http-") as work,
        _service(server_core, ["--feed", "sim", "--history", "60"]) as (_, port, http_port),
        peer_bench.running_peer() as peer,
    ):
        wait_serving(port, service=SERVICE_NAME, timeout=60)
        rows = _rows(port, http_port, peer.port)
        bodies: dict[str, Path] = {}
        for i, row in enumerate(rows):
            _check(row)
            if row.body is not None:
                bodies[row.name] = Path(work) / f"body-{i}"
                bodies[row.name].write_bytes(row.body)
        for r in range(rounds):
            for row in rows if r % 2 == 0 else rows[::-1]:
                results.setdefault(row.name, []).append(
                    h2load(
                        row.url,
                        seconds=seconds,
                        core=load_core,
                        h1=row.h1,
                        conns=row.conns,
                        streams=row.streams,
                        body=bodies.get(row.name),
                        headers=row.headers,
                    )
                )
    best = {name: max(loads, key=lambda load: load.rps) for name, loads in results.items()}
    for name, load in best.items():
        if load.failed:
            raise RuntimeError(f"{name}: {load.failed} requests failed")
    native, peer_rps = best["native gRPC (h2c)"].rps, best["peer REST (FastAPI)"].rps
    table = []
    for name, load in best.items():
        table.append(
            {
                "row": name,
                "rps": load.rps,
                "rounds": [round(x.rps) for x in results[name]],
                "mean_ms": load.mean_ms,
                "vs_native": load.rps / native,
                "vs_peer": load.rps / peer_rps,
            }
        )
    return {"rows": table}


def _cores() -> tuple[int | None, int | None]:
    available = cores()
    return (available[0], available[1]) if len(available) > 1 else (None, None)


def fanout(*, quick: bool) -> dict[str, Any]:
    server_core, load_core = _cores()
    seconds, warmup = (4.0, 1.5) if quick else (10.0, 2.0)
    found: dict[str, Any] = {}
    for n in (100, 1000):
        with (
            tempfile.TemporaryDirectory(prefix="cw-webfan-") as work,
            _service(server_core, ["--feed", "inject", "--inject", "1", "--rate", "10"]) as (
                server,
                port,
                http_port,
            ),
        ):
            wait_serving(port, service=SERVICE_NAME, timeout=60)
            argv = [PYTHON, "bench/fanout_web_client.py", "--port", str(http_port), "--n", str(n)]
            argv += ["--warmup", str(warmup)]
            with spawn(pinned(load_core, argv)) as proc:
                proc.expect("READY", timeout=120)
                result = _Client(proc, server, notes_hub=True, work=Path(work)).measure(seconds)
        result = _public(result)
        result["cpu_us_per_msg"] = result["server_cpu"] / result["msgs_per_s"] * 1e6
        found[f"candlewire_{n}"] = result
    with peer_bench.running_peer() as peer:
        idle = peer_bench.measure_idle(peer)
        for n in (100, 1000):
            result = peer_bench.measure_fanout(peer, n, seconds, warmup=warmup)
            result["idle_server_cpu"] = idle
            found[f"peer_{n}"] = result
    return found


def _print(report: dict[str, Any]) -> None:
    rows = report.get("unary", {}).get("rows", [])
    if rows:
        print(f"{'GetPrice':32} {'req/s':>9} {'vs native':>10} {'vs peer':>8}  rounds")
        for r in rows:
            print(
                f"{r['row']:32} {r['rps']:9.0f} {r['vs_native']:9.2f}x {r['vs_peer']:7.2f}x  "
                f"{r['rounds']}"
            )
        http = [r for r in rows if r["row"] not in ("native gRPC (h2c)", "peer REST (FastAPI)")]
        print(
            "targets (every HTTP row): >= 1.5x peer: "
            f"{all(r['vs_peer'] >= 1.5 for r in http)}; >= 70 % of native: "
            f"{all(r['vs_native'] >= 0.70 for r in http)}"
        )
    fan = report.get("fanout")
    if fan:
        print()
        print(
            f"{'fan-out, 10 updates/s':32} {'msg/s':>8} {'CPU us/msg':>11} "
            f"{'p50 ms':>8} {'p99 ms':>8}"
        )
        for n in (100, 1000):
            for who in ("candlewire", "peer"):
                r = fan[f"{who}_{n}"]
                p50 = r.get("hub_p50_ms", r.get("p50_ms"))
                p99 = r.get("hub_p99_ms", r.get("p99_ms"))
                label = "grpc-web streams" if who == "candlewire" else "peer WebSocket"
                print(
                    f"{label + f' x {n}':32} {r['msgs_per_s']:8.0f} {r['cpu_us_per_msg']:11.1f} "
                    f"{p50:8.2f} {p99:8.2f}"
                )
            ours, theirs = fan[f"candlewire_{n}"], fan[f"peer_{n}"]
            print(
                f"  {n}: CPU/msg {ours['cpu_us_per_msg'] / theirs['cpu_us_per_msg']:.2f}x"
                " the peer's"
                f" (target <= 1); p99 {ours.get('hub_p99_ms', 0) / theirs['p99_ms']:.2f}x"
                " (target <= 1)"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=("unary", "fanout"))
    args = parser.parse_args()
    report: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.only in (None, "unary"):
        report["unary"] = unary(quick=args.quick)
    if args.only in (None, "fanout"):
        report["fanout"] = fanout(quick=args.quick)
    if args.json:
        print(json.dumps(report, indent=2, default=lambda o: asdict(o)))
    else:
        _print(report)


if __name__ == "__main__":
    main()
