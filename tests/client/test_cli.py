"""The client subcommands of ``candlewire``.

Most run in-process (``candlewire.cli.main`` in a worker thread) against the
service on the test's event loop, so their output can be compared with exact
data; ``watch`` also runs as a real subprocess on a pseudo-terminal to check
the live table and Ctrl-C, and one test drives a real ``candlewire serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import pty
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.app import App
from candlewire.cli import main
from candlewire_client import CandleList, CandlewireClient, Interval, Source
from candlewire_client import cli as client_cli
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.client.conftest import WAIT, SideServer
from tests.scripted import T0, ScriptedFeed, sec

T0_UTC = datetime.fromtimestamp(T0 // 10**9, UTC)


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``candlewire ARGV`` in a worker thread; (status, stdout, stderr)."""
    status = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _iso(ts: Timestamp) -> str:
    moment = datetime.fromtimestamp(ts.seconds, UTC) + timedelta(microseconds=ts.nanos // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def _wire_rows(candles: Sequence[pb.Candle]) -> list[dict[str, object]]:
    """GetCandles' candles as the CLI's CSV/JSON records, values as on the wire."""
    return [
        {
            "symbol": c.symbol,
            "interval": Interval.from_number(c.interval).value,
            "open_time": _iso(c.open_time),
            "close_time": _iso(c.close_time),
            "open": c.open,
            "high": c.high,
            "low": c.low,
            "close": c.close,
            "volume": c.volume,
            "quote_volume": c.quote_volume,
            "trade_count": c.trade_count,
            "closed": c.closed,
            "revision": c.revision,
            "source": Source.from_number(c.source).value,
            "buy_volume": c.buy_volume,
            "buy_quote_volume": c.buy_quote_volume,
        }
        for c in candles
    ]


def _parse_csv(text: str) -> list[dict[str, object]]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == list(CandleList.COLUMNS)
    numbers = (
        "open", "high", "low", "close", "volume", "quote_volume", "buy_volume", "buy_quote_volume"
    )  # fmt: skip
    return [
        {
            **row,
            **{k: float(row[k]) for k in numbers},
            "trade_count": int(row["trade_count"]),
            "revision": int(row["revision"]),
            "closed": {"true": True, "false": False}[row["closed"]],
        }
        for row in reader
    ]


async def _get_candles(
    stub: marketdata_pb2_grpc.MarketDataServiceAsyncStub, symbol: str, interval: int
) -> list[pb.Candle]:
    response = await stub.GetCandles(
        pb.GetCandlesRequest(
            symbol=symbol,
            interval=interval,  # type: ignore[arg-type]
            start_time=Timestamp(seconds=T0 // 10**9),
            page_size=1000,
        )
    )
    return list(response.candles)


TRADES = [
    ("BTCUSDT", sec(i * 7.5), f"{64000 + (i * 37) % 500}.{(i * 13) % 100:02d}", f"0.{i + 1:03d}")
    for i in range(120)
]


async def test_candles_csv_and_json_are_exactly_get_candles(
    feed: ScriptedFeed,
    target: str,
    stub: marketdata_pb2_grpc.MarketDataServiceAsyncStub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await feed.trades(TRADES)
    for interval, number in (("1s", pb.INTERVAL_1S), ("1m", pb.INTERVAL_1M)):
        expected = _wire_rows(await _get_candles(stub, "BTCUSDT", number))
        base = ["candles", "BTCUSDT", interval, "--target", target]
        status, out, _ = await cli(capsys, *base, "--format", "csv", "--page-size", "7")
        assert status == 0
        assert _parse_csv(out) == expected
        status, out, _ = await cli(capsys, *base, "--format", "json")
        assert status == 0
        assert json.loads(out) == expected
    assert len(expected) == 15


async def test_candles_table_and_ranges(
    feed: ScriptedFeed, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await feed.trades([("BTCUSDT", sec(i), f"{100 + i}.5", "2") for i in range(10)])
    status, out, _ = await cli(
        capsys,
        "candles", "btcusdt", "1s", "--target", target,
        "--start", "2026-01-01T00:00:02Z", "--end", "2026-01-01T00:00:05", "--limit", "2",
    )  # fmt: skip
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "OPEN_TIME", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "TRADE_COUNT", "STATE", "REVISION",
    ]  # fmt: skip
    assert lines[1].split() == [
        "2026-01-01T00:00:02Z", "102.5", "102.5", "102.5", "102.5", "2.0", "1", "closed", "0",
    ]  # fmt: skip
    assert len(lines) == 3
    status, out, _ = await cli(
        capsys, "candles", "BTCUSDT", "1s", "--target", target, "--limit", "3", "--format", "csv"
    )
    assert [row["close"] for row in _parse_csv(out)] == [107.5, 108.5, 109.5]  # the latest 3
    status, out, _ = await cli(capsys, "candles", "ETHUSDT", "1M", "--target", target)
    assert (status, out.split()) == (
        0,
        ["OPEN_TIME", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "TRADE_COUNT", "STATE", "REVISION"],
    )


async def test_price(feed: ScriptedFeed, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    await feed.quote("BTCUSDT", sec(1), "64123.45", "64123.47")
    status, out, _ = await cli(capsys, "price", "BTCUSDT", "ETHUSDT", "--target", target)
    assert status == 0
    header, btc, eth = out.splitlines()
    assert header.split()[:6] == ["SYMBOL", "BID", "ASK", "MID", "SPREAD", "LAST"]
    assert btc.split()[:5] == ["BTCUSDT", "64123.45", "64123.47", "64123.46", "0.02"]
    assert "2026-01-01T00:00:01Z" in btc
    assert eth.split() == ["ETHUSDT", "true", "no", "quote", "yet"]

    status, out, _ = await cli(capsys, "price", "BTCUSDT", "--target", target, "--format", "json")
    [record] = json.loads(out)
    assert record["mid"] == 64123.46
    assert record["event_time"] == "2026-01-01T00:00:01Z"
    status, out, _ = await cli(capsys, "price", "BTCUSDT", "--target", target, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert Decimal(rows[0]["spread"]) == Decimal("0.02")


async def test_symbols(app: App, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = await cli(capsys, "symbols", "--target", target)
    assert status == 0
    lines = out.splitlines()
    assert lines[1].split() == ["BTCUSDT", "BTC", "USDT", "2", "4", "live", ",".join(Interval)]
    status, out, _ = await cli(capsys, "symbols", "--target", target, "--format", "json")
    assert json.loads(out)[1]["intervals"] == [i.value for i in Interval]


async def test_health(feed: ScriptedFeed, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = await cli(capsys, "health", "--target", target)
    assert status == 1  # the feed has said nothing yet
    assert out.split() == ["target", target, "liveness", "SERVING", "readiness", "NOT_SERVING"]
    status, out, _ = await cli(capsys, "health", "--target", target, "--wait", "0.3")
    assert status == 1
    assert "not ready after 0.3 s: DEADLINE_EXCEEDED" in out
    await feed.trade("BTCUSDT", sec(0), "1")
    status, out, _ = await cli(capsys, "health", "--target", target, "--wait", "10")
    assert status == 0
    assert "readiness  SERVING" in out


async def test_target_from_the_environment(
    app: App, target: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDLEWIRE_TARGET", target)
    status, out, _ = await cli(capsys, "symbols", "--format", "csv")
    assert status == 0
    assert out.startswith("symbol,base_asset")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_errors(app: App, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = await cli(capsys, "candles", "NOPE", "1m", "--target", target)
    assert (status, out) == (1, "")
    assert err.splitlines() == [
        "candlewire: NOT_FOUND: unknown symbol 'NOPE'",
        "  symbol: unknown symbol 'NOPE'",
    ]
    status, _, err = await cli(
        capsys, "candles", "BTCUSDT", "1m", "--target", target,
        "--start", "2026-01-02", "--end", "2026-01-01",
    )  # fmt: skip
    assert status == 1
    assert "  end_time: must be after start_time" in err
    status, _, err = await cli(
        capsys, "symbols", "--target", f"127.0.0.1:{_closed_port()}", "--timeout", "2"
    )
    assert status == 1
    assert err.startswith("candlewire: UNAVAILABLE:")
    for bad in (["candles", "BTCUSDT", "7m"], ["candles", "BTCUSDT", "1m", "--start", "later"]):
        with pytest.raises(SystemExit) as caught:
            main(bad)
        assert caught.value.code == 2
    assert "is not a time" in capsys.readouterr().err


async def test_watch_prints_updates_until_count(
    feed: ScriptedFeed, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await feed.trades([("BTCUSDT", sec(i), f"{100 + i}.25", "1") for i in range(5)])
    status, out, _ = await cli(
        capsys, "watch", "BTCUSDT,ETHUSDT", "1s", "1m", "--target", target, "--count", "3",
        "--history", "2",
    )  # fmt: skip
    assert status == 0
    assert out.splitlines() == [
        f"# watching BTCUSDT@1s, BTCUSDT@1m, ETHUSDT@1s, ETHUSDT@1m at {target}",
        "# history",
        "BTCUSDT@1s 2026-01-01T00:00:03Z o=103.25 h=103.25 l=103.25 c=103.25 v=1.0 n=1 closed r0",
        "BTCUSDT@1s 2026-01-01T00:00:04Z o=104.25 h=104.25 l=104.25 c=104.25 v=1.0 n=1 forming r0",
        "BTCUSDT@1m 2026-01-01T00:00:00Z o=100.25 h=104.25 l=100.25 c=104.25 v=5.0 n=5 forming r0",
        "# stopped: 3 updates",
    ]


async def test_watch_stops_after_duration(
    app: App, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await cli(
        capsys, "watch", "ETHUSDT", "1h", "--target", target, "--duration", "0.3"
    )
    assert status == 0
    assert out.splitlines()[-2:] == ["# live", "# stopped: after 0.3 s"]


class Screen(io.StringIO):
    """A stdout for a CLI in a worker thread that the test's loop can wait on."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._lock = threading.Lock()
        self._changed = asyncio.Event()

    def write(self, text: str) -> int:
        with self._lock:
            written = super().write(text)
        self._loop.call_soon_threadsafe(self._changed.set)
        return written

    def text(self) -> str:
        with self._lock:
            return self.getvalue()

    async def wait_for(self, predicate: Callable[[str], bool]) -> str:
        async with asyncio.timeout(WAIT):
            while not predicate(text := self.text()):
                self._changed.clear()
                if not predicate(self.text()):
                    await self._changed.wait()
        return text


async def test_watch_shows_reconnects(app: App, feed: ScriptedFeed) -> None:
    side = SideServer(app, feed)
    await side.start()
    screen = Screen(asyncio.get_running_loop())
    argv = ["watch", "BTCUSDT", "1s", "--target", side.target, "--count", "3", "--timeout", "2"]
    watch = asyncio.create_task(asyncio.to_thread(client_cli.main, argv, stdout=screen))
    await screen.wait_for(lambda text: "# live" in text)
    await side.stop()
    await screen.wait_for(lambda text: "# reconnecting: attempt 1 in" in text)
    await feed.trade("BTCUSDT", sec(0), "100.5")  # while down
    await side.start()
    await feed.trade("BTCUSDT", sec(1), "101.5")
    assert await asyncio.wait_for(watch, WAIT) == 0
    await side.stop()
    lines = screen.text().splitlines()
    reconnect = next(i for i, line in enumerate(lines) if line.startswith("# reconnecting"))
    assert "UNAVAILABLE" in lines[reconnect]
    assert lines[reconnect + 1] == "# live"
    assert lines[reconnect + 2 :] == [
        "BTCUSDT@1s 2026-01-01T00:00:00Z o=100.5 h=100.5 l=100.5 c=100.5 v=1.0 n=1 forming r0",
        "BTCUSDT@1s 2026-01-01T00:00:00Z o=100.5 h=100.5 l=100.5 c=100.5 v=1.0 n=1 closed r1",
        "BTCUSDT@1s 2026-01-01T00:00:01Z o=101.5 h=101.5 l=101.5 c=101.5 v=1.0 n=1 forming r0",
        "# stopped: 3 updates",
    ]


@contextlib.asynccontextmanager
async def _terminal(argv: Sequence[str], env: dict[str, str]) -> AsyncIterator[Any]:
    """Run ``argv`` with a pseudo-terminal as stdout; yields (process, Screen-like reader)."""
    master, slave = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    loop = asyncio.get_running_loop()
    screen = Screen(loop)

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if data:
            screen.write(data.decode(errors="replace"))
        else:
            loop.remove_reader(master)

    loop.add_reader(master, readable)
    try:
        yield process, screen
    finally:
        loop.remove_reader(master)
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(master)


async def test_watch_on_a_terminal_stops_cleanly_on_ctrl_c(feed: ScriptedFeed, target: str) -> None:
    await feed.trades([("BTCUSDT", sec(i), f"{100 + i}.25", "1") for i in range(3)])
    env = {**os.environ, "CANDLEWIRE_TARGET": target, "COLUMNS": "120"}
    argv = [sys.executable, "-m", "candlewire", "watch", "BTCUSDT", "1s", "1m", "--rows", "3"]
    async with _terminal(argv, env) as (process, screen):
        await screen.wait_for(lambda text: "state: live" in text and "BTCUSDT@1m" in text)
        await feed.trade("BTCUSDT", sec(3), "103.75", "2")
        await screen.wait_for(lambda text: "103.75" in text)
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), WAIT) == 0
        text = await screen.wait_for(lambda text: text.endswith("\x1b[?25h"))
    assert "Traceback" not in text
    assert text.startswith("\x1b[?25l")  # cursor hidden while the table is redrawn
    final = text.rsplit("\x1b[H\x1b[2J", 1)[1]  # the last frame
    assert "stopped: interrupted" in final
    assert re.search(
        r"2026-01-01 00:00:03 +103\.75 +103\.75 +103\.75 +103\.75 +2\.0 +1 +forming", final
    )
    assert re.search(
        r"2026-01-01 00:00:00 +100\.25 +103\.75 +100\.25 +103\.75 +5\.0 +4 +forming", final
    )


async def test_against_a_real_server_process(capsys: pytest.CaptureFixture[str]) -> None:
    """``candlewire serve`` (simulated feed) in a subprocess, queried by the CLI."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "candlewire", "serve", "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "",
        "--sim-history", "30", "--symbols", "BTCUSDT",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")},
    )  # fmt: skip
    assert server.stderr is not None
    try:
        async with asyncio.timeout(WAIT):
            while not (
                match := re.search(
                    rb"gRPC listening on \S+ \(port (\d+)\)", line := await server.stderr.readline()
                )
            ):
                assert line, "the server exited"
        target = f"127.0.0.1:{int(match.group(1))}"
        drain = asyncio.create_task(server.stderr.read())

        status, out, _ = await cli(capsys, "health", "--target", target, "--wait", "20")
        assert status == 0, out
        end = (datetime.now(UTC) - timedelta(minutes=2)).replace(second=0, microsecond=0)
        status, out, _ = await cli(
            capsys, "candles", "BTCUSDT", "1m", "--target", target, "--format", "json",
            "--end", end.isoformat(),
        )  # fmt: skip
        assert status == 0
        async with CandlewireClient(target) as client:
            candles = await client.fetch_candles("BTCUSDT", "1m", end=end)
        assert len(candles) >= 25
        records = json.loads(out)
        assert [r["close"] for r in records] == [c.close for c in candles]
        assert [r["open_time"] for r in records] == [
            c.open_time.isoformat().replace("+00:00", "Z") for c in candles
        ]
        assert {r["source"] for r in records} == {"simulated"}
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), WAIT) == 0
    drain.cancel()
