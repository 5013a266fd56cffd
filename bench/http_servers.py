"""Python HTTP servers for the grpc-web port, compared on the gateway's work.

Each candidate runs in its own process pinned to one core, on the stock
asyncio event loop (the loop the service and its ``grpc.aio`` server run on),
serving a minimal app that does what the gateway does for a grpc-web unary
``GetPrice``: read the POST body (5-byte frame prefix and a 10-byte request),
await a handler (a dict lookup returning 60 constant bytes) and answer 200,
``content-type: application/grpc-web+proto``, with the framed message followed
by the trailers frame (flag 0x80, ``grpc-status:0``). h2load, pinned to the
other core, drives it over HTTP/2 cleartext with prior knowledge (4
connections x 8 streams), HTTP/1.1 (32 connections) and HTTP/2 over TLS with
ALPN (4 x 8).

Streaming: ``/stream`` writes 1,000 frames of 60 bytes, one send (a flush)
each, to 20 concurrent clients, several rounds; the server's CPU seconds
(utime + stime of all its threads, from /proc) divided by the frames written.

Candidates: Hypercorn (the gateway's server today, ASGI), Granian embedded in
the asyncio loop (``granian.server.embed.Server``) through ASGI and through
RSGI, and Uvicorn with httptools (HTTP/1.1 only, a reference). Rounds
alternate the candidates (reversed every other round); the best round counts.

    python bench/http_servers.py [--rounds 2] [--seconds 6] [--only hypercorn,granian-rsgi]
    python bench/http_servers.py --serve granian-rsgi --port 8080 [--tls DIR]  # one server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, cores, cpu_seconds, free_port, pinned

CONTENT_TYPE = b"application/grpc-web+proto"
PATH = "/marketdata.v1.MarketDataService/GetPrice"
REQUEST = b"\n\x07BTCUSDT\x10\x01"  # ~10 bytes of protobuf
REQUEST_BODY = struct.pack(">BI", 0, len(REQUEST)) + REQUEST
TRAILERS = b"grpc-status:0\r\n"
TRAILERS_FRAME = struct.pack(">BI", 0x80, len(TRAILERS)) + TRAILERS
PRICES = {REQUEST: bytes(range(60))}
STREAM_FRAMES = 1_000
STREAM_FRAME = struct.pack(">BI", 0, 55) + bytes(55)  # 60 bytes on the wire
STREAM_CLIENTS = 20
STREAM_REQUESTS = 60  # per run: 60 responses of 1,000 frames

CANDIDATES = ("hypercorn", "granian-asgi", "granian-rsgi", "uvicorn-httptools")
H1_ONLY = frozenset({"uvicorn-httptools"})
BASELINE = "hypercorn"


async def get_price(request: bytes) -> bytes:
    """The handler's core: a lookup returning stored bytes."""
    return PRICES[request]


def frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


# --- the apps ---------------------------------------------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
RESPONSE_HEADERS = [(b"content-type", CONTENT_TYPE)]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": RESPONSE_HEADERS})
        for _ in range(STREAM_FRAMES):
            await send({"type": "http.response.body", "body": STREAM_FRAME, "more_body": True})
        await send({"type": "http.response.body", "body": TRAILERS_FRAME})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    reply = await get_price(body[5:])
    await send({"type": "http.response.start", "status": 200, "headers": RESPONSE_HEADERS})
    await send({"type": "http.response.body", "body": frame(reply) + TRAILERS_FRAME})


RSGI_HEADERS = [("content-type", CONTENT_TYPE.decode())]


class RsgiApp:
    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.path == "/stream":
            transport = proto.response_stream(200, RSGI_HEADERS)
            for _ in range(STREAM_FRAMES):
                await transport.send_bytes(STREAM_FRAME)
            await transport.send_bytes(TRAILERS_FRAME)
            return
        body = await proto()
        reply = await get_price(body[5:])
        proto.response_bytes(200, RSGI_HEADERS, frame(reply) + TRAILERS_FRAME)


# --- serving (child process) ---------------------------------------------------


def tls_files(directory: Path) -> tuple[Path, Path]:
    return directory / "cert.pem", directory / "key.pem"


def make_tls(directory: Path) -> Path:
    """A CA and a localhost certificate (trustme); returns the CA file."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tls_files(directory)
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return directory / "ca.pem"


async def serve(name: str, port: int, tls: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # stdin closed: stop
    cert, key = tls_files(tls) if tls is not None else (None, None)
    if name == "hypercorn":
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.include_server_header = False
        # Hypercorn ends a connection after 1,000 requests (GOAWAY over
        # HTTP/2), which h2load does not survive; the others set no such limit.
        config.keep_alive_max_requests = 2**31
        if cert is not None and key is not None:
            config.certfile, config.keyfile = str(cert), str(key)
        task = asyncio.create_task(hypercorn_serve(asgi_app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    elif name.startswith("granian"):
        from granian.constants import Interfaces
        from granian.log import LogLevels
        from granian.server.embed import Server

        rsgi = name == "granian-rsgi"
        server = Server(
            RsgiApp() if rsgi else asgi_app,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.RSGI if rsgi else Interfaces.ASGINL,
            log_level=LogLevels.warning,
            ssl_cert=cert,
            ssl_key=key,
        )
        task = asyncio.create_task(server.serve())
        asyncio.create_task(_stop_when(stop, server.stop))  # noqa: RUF006
    elif name == "uvicorn-httptools":
        import uvicorn

        uconfig = uvicorn.Config(
            asgi_app,
            host="127.0.0.1",
            port=port,
            loop="none",
            http="httptools",
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=False,
            ssl_certfile=str(cert) if cert else None,
            ssl_keyfile=str(key) if key else None,
        )
        userver = uvicorn.Server(uconfig)
        task = asyncio.create_task(userver.serve())

        def _exit() -> None:
            userver.should_exit = True

        asyncio.create_task(_stop_when(stop, _exit))  # noqa: RUF006
    else:
        raise SystemExit(f"unknown server {name}")
    print("READY", flush=True)
    await task


async def _stop_when(event: asyncio.Event, action: Callable[[], None]) -> None:
    await event.wait()
    action()


# --- driving (parent process) --------------------------------------------------


@dataclass
class Row:
    rps: list[float] = field(default_factory=list)
    us_per_msg: list[float] = field(default_factory=list)
    stalled: int = 0  # runs that did not end (streams never answered)


def h2load(url: str, body: Path, *, h1: bool, seconds: int, core: int | None) -> float | None:
    shape = ["--h1", "-c", "32"] if h1 else ["-c", "4", "-m", "8"]
    argv = pinned(
        core,
        [
            "h2load",
            *shape,
            f"-D{seconds}",
            "--warm-up-time=1",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc-web+proto",
            url,
        ],
    )
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    except subprocess.TimeoutExpired:
        return None  # h2load waits for streams that never end: a stalled run
    return _parse(out, argv, len(frame(PRICES[REQUEST]) + TRAILERS_FRAME))


def _parse(out: str, argv: list[str], min_body: int) -> float:
    """req/s, after checking that every request was answered.

    h2load counts a status code only when the reason phrase is not empty, and
    Hypercorn's HTTP/1.1 (h11) sends none: over HTTP/1.1 a request counts as
    answered when it is done without error and the bodies add up.
    """
    finished = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    counts = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, \d+ failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    data = re.search(r"\((\d+)\) data", out)
    if not (finished and counts and data):
        raise RuntimeError(f"cannot parse h2load output of {argv}:\n{out}")
    done, succeeded, errored, timeouts = (int(counts.group(i)) for i in (2, 3, 4, 5))
    h1_answered = "--h1" in argv and int(data.group(1)) >= done * min_body
    if done == 0 or errored or timeouts or not (succeeded == done or h1_answered):
        raise RuntimeError(f"failed requests in {argv}:\n{out}")
    return float(finished.group(1))


def stream_cpu(url: str, pid: int, *, h1: bool, core: int | None) -> float:
    """Server CPU microseconds per streamed frame."""
    shape = (
        ["--h1", "-c", str(STREAM_CLIENTS)] if h1 else ["-c", "2", "-m", str(STREAM_CLIENTS // 2)]
    )
    argv = pinned(core, ["h2load", *shape, "-n", str(STREAM_REQUESTS), url])
    before = cpu_seconds(pid)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
    after = cpu_seconds(pid)
    _parse(out, argv, STREAM_FRAMES * len(STREAM_FRAME) + len(TRAILERS_FRAME))
    return (after - before) * 1e6 / (STREAM_REQUESTS * STREAM_FRAMES)


def check_answers(port: int, tls_port: int | None, ca: Path, h1_only: bool) -> None:
    """One request over HTTP/1.1 and one over HTTP/2 (TLS, ALPN): the exact bytes back."""
    import httpx

    expected = frame(PRICES[REQUEST]) + TRAILERS_FRAME
    headers = {"content-type": CONTENT_TYPE.decode()}
    urls = [(f"http://127.0.0.1:{port}{PATH}", False)]
    if tls_port is not None:
        urls.append((f"https://localhost:{tls_port}{PATH}", not h1_only))
    for url, http2 in urls:
        verify = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(http2=http2, verify=verify) as client:
            answer = client.post(url, content=REQUEST_BODY, headers=headers)
        version = "HTTP/2" if http2 else "HTTP/1.1"
        if answer.http_version != version or answer.content != expected:
            raise RuntimeError(
                f"{url}: {answer.http_version} {answer.status_code} {answer.content!r}"
            )
        if answer.headers["content-type"] != CONTENT_TYPE.decode():
            raise RuntimeError(f"{url}: content-type {answer.headers['content-type']}")


@contextlib.contextmanager
def server(name: str, port: int, tls: Path | None, core: int | None) -> Iterator[int]:
    argv = [PYTHON, __file__, "--serve", name, "--port", str(port)]
    if tls is not None:
        argv += ["--tls", str(tls)]
    proc = subprocess.Popen(pinned(core, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"READY":
            raise RuntimeError(f"{name} did not start: {line!r}")
        _wait_port(port)
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def run(names: list[str], rounds: int, seconds: int) -> None:
    cpu = cores()
    server_core, load_core = (cpu[0], cpu[1]) if len(cpu) >= 2 else (None, None)
    unary: dict[tuple[str, str], Row] = {}
    streams: dict[tuple[str, str], Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca = make_tls(work)
        body = work / "body.bin"
        body.write_bytes(REQUEST_BODY)
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                h1_only = name in H1_ONLY
                port, tls_port = free_port(), free_port()
                with (
                    server(name, port, None, server_core) as pid,
                    server(name, tls_port, work, server_core) as tls_pid,
                ):
                    check_answers(port, tls_port, ca, h1_only)
                    url = f"http://127.0.0.1:{port}{PATH}"
                    tls_url = f"https://127.0.0.1:{tls_port}{PATH}"
                    cases: list[tuple[str, str, bool]] = [("HTTP/1.1", url, True)]
                    if not h1_only:
                        cases += [("h2c", url, False), ("h2 TLS", tls_url, False)]
                    for proto, target, h1 in cases:
                        rps = h2load(target, body, h1=h1, seconds=seconds, core=load_core)
                        row = unary.setdefault((name, proto), Row())
                        if rps is None:
                            row.stalled += 1
                            print(f"round {r + 1} {name:18} {proto:8} STALLED", flush=True)
                            continue
                        row.rps.append(rps)
                        print(f"round {r + 1} {name:18} {proto:8} {rps:>10,.0f} req/s", flush=True)
                    stream_url = f"http://127.0.0.1:{port}/stream"
                    for proto, h1 in [("HTTP/1.1", True)] + ([] if h1_only else [("h2c", False)]):
                        us = stream_cpu(stream_url, pid, h1=h1, core=load_core)
                        streams.setdefault((name, proto), Row()).us_per_msg.append(us)
                        print(
                            f"round {r + 1} {name:18} {proto:8} stream {us:6.1f} us/frame",
                            flush=True,
                        )
                    del tls_pid
    report(names, unary, streams)


def report(
    names: list[str], unary: dict[tuple[str, str], Row], streams: dict[tuple[str, str], Row]
) -> None:
    print()
    print("Unary grpc-web GetPrice (best of rounds; ratio to Hypercorn, same protocol)")
    print(f"| {'server':18} | {'protocol':8} | {'req/s':>9} | {'rounds':>21} | {'ratio':>6} |")
    print(f"|{'-' * 20}|{'-' * 10}|{'-' * 11}|{'-' * 23}|{'-' * 8}|")
    for proto in ("h2c", "h2 TLS", "HTTP/1.1"):
        base = unary.get((BASELINE, proto))
        for name in names:
            row = unary.get((name, proto))
            if row is None:
                continue
            best = max(row.rps, default=0.0)
            ratio = f"{best / max(base.rps):.2f}x" if base and base.rps else "-"
            rounds = " / ".join([f"{v:,.0f}" for v in row.rps] + ["stalled"] * row.stalled)
            print(f"| {name:18} | {proto:8} | {best:>9,.0f} | {rounds:>21} | {ratio:>6} |")
    print()
    print(
        f"Streaming: {STREAM_CLIENTS} clients x {STREAM_FRAMES} frames of {len(STREAM_FRAME)} B, "
        f"{STREAM_REQUESTS} responses a run; server CPU per frame (best of rounds)"
    )
    print(f"| {'server':18} | {'protocol':8} | {'us/frame':>8} | {'rounds':>15} | {'ratio':>6} |")
    print(f"|{'-' * 20}|{'-' * 10}|{'-' * 10}|{'-' * 17}|{'-' * 8}|")
    for proto in ("h2c", "HTTP/1.1"):
        base = streams.get((BASELINE, proto))
        for name in names:
            row = streams.get((name, proto))
            if row is None:
                continue
            best = min(row.us_per_msg)
            ratio = f"{best / min(base.us_per_msg):.2f}x" if base else "-"
            rounds = " / ".join(f"{v:.1f}" for v in row.us_per_msg)
            print(f"| {name:18} | {proto:8} | {best:>8.1f} | {rounds:>15} | {ratio:>6} |")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {sys.version.split()[0]}"]
    for dist in ("hypercorn", "h2", "granian", "uvicorn", "httptools"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=CANDIDATES, help="run one server (child mode)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--tls", type=Path, help="directory holding cert.pem and key.pem")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port, args.tls))
        return
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    print(versions(), f"cores {cores()}", flush=True)
    run(names, args.rounds, args.seconds)


if __name__ == "__main__":
    main()
