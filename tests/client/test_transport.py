"""Metadata, deadlines, unary retries and TLS, against a scripted MarketDataService."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.cli import main
from candlewire_client import (
    AuthError,
    CandlewireClient,
    DeadlineExceededError,
    RetryPolicy,
    UnavailableError,
)
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.client.conftest import FakeService


async def _symbols(request: Any, context: Any) -> pb.ListSymbolsResponse:
    return pb.ListSymbolsResponse(symbols=[pb.SymbolInfo(symbol="BTCUSDT")])


async def test_credentials_and_metadata_go_with_every_call(fake: FakeService) -> None:
    fake.handlers["ListSymbols"] = _symbols
    fake.handlers["SubscribeCandles"] = _one_snapshot_end
    await fake.start()
    async with CandlewireClient(
        fake.target,
        api_key="key-1",
        bearer_token="token-2",
        metadata=[("x-tenant", "desk-7")],
    ) as client:
        await client.list_symbols()
        stream = client.subscribe_candles("BTCUSDT@1m")
        await anext(stream)
        await stream.aclose()
    for metadata in fake.metadata:
        assert metadata["x-api-key"] == "key-1"
        assert metadata["authorization"] == "Bearer token-2"
        assert metadata["x-tenant"] == "desk-7"
        assert metadata["user-agent"].startswith("candlewire-client-python/")
    assert len(fake.metadata) == 2


async def _one_snapshot_end(request: Any, context: Any) -> Any:
    yield pb.SubscribeCandlesResponse(snapshot_end=pb.SnapshotEnd(), resume_token="t")


def _never(attempt: int, delay: float, error: object) -> None:
    raise AssertionError(f"reconnected after {error}")


async def test_auth_errors_are_not_retried(fake: FakeService) -> None:
    async def refuse(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing x-api-key")
        yield  # pragma: no cover

    fake.handlers["SubscribeCandles"] = refuse
    await fake.start()
    async with CandlewireClient(fake.target) as client:
        stream = client.subscribe_candles("BTCUSDT@1m", on_reconnect=_never)
        with pytest.raises(AuthError, match="missing x-api-key"):
            await anext(stream)
    assert len(fake.requests) == 1


async def test_unary_deadline(fake: FakeService) -> None:
    never = asyncio.Event()

    async def hang(request: Any, context: Any) -> pb.ListSymbolsResponse:
        await never.wait()
        raise AssertionError("unreachable")

    fake.handlers["ListSymbols"] = hang
    await fake.start()
    async with CandlewireClient(fake.target, timeout=30) as client:
        with pytest.raises(DeadlineExceededError):
            await client.list_symbols(timeout=0.2)  # the per-call deadline wins
    async with CandlewireClient(fake.target, timeout=0.2) as client:
        with pytest.raises(DeadlineExceededError):
            await client.list_symbols()


async def test_unary_calls_retry_unavailable(fake: FakeService) -> None:
    async def flaky(request: Any, context: Any) -> pb.ListSymbolsResponse:
        if len(fake.requests) < 3:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return await _symbols(request, context)

    fake.handlers["ListSymbols"] = flaky
    await fake.start()
    policy = RetryPolicy(initial=0.01, maximum=0.02, unary_attempts=3)
    async with CandlewireClient(fake.target, retry=policy) as client:
        assert [s.symbol for s in await client.list_symbols()] == ["BTCUSDT"]
        assert len(fake.requests) == 3
    fake.requests.clear()
    async with CandlewireClient(fake.target, retry=RetryPolicy(unary_attempts=1)) as client:
        with pytest.raises(UnavailableError, match="restarting"):
            await client.list_symbols()
        assert len(fake.requests) == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (made with openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return key, cert


async def _prices(request: Any, context: Any) -> pb.BatchGetPricesResponse:
    return pb.BatchGetPricesResponse(
        prices=[
            pb.Price(
                symbol=s,
                bid=1.5,
                ask=2.5,
                mid=2.0,
                spread=1.0,
                event_time=Timestamp(seconds=1),
                receive_time=Timestamp(seconds=2),
            )
            for s in request.symbols
        ]
    )


async def test_tls(
    fake: FakeService, certificate: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, cert = certificate
    fake.handlers["ListSymbols"] = _symbols
    fake.handlers["BatchGetPrices"] = _prices
    await fake.start(grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    async with CandlewireClient(fake.target, root_certificates=cert.read_bytes()) as client:
        assert [s.symbol for s in await client.list_symbols()] == ["BTCUSDT"]
    once = RetryPolicy(unary_attempts=1)
    async with CandlewireClient(fake.target, tls=True, retry=once, timeout=5) as client:
        with pytest.raises(UnavailableError):  # the system roots do not trust it
            await client.list_symbols()
    async with CandlewireClient(fake.target, retry=once, timeout=5) as client:
        with pytest.raises(UnavailableError):  # plaintext to a TLS port
            await client.list_symbols()

    argv = ["price", "BTCUSDT", "--target", fake.target, "--ca-file", str(cert), "--format", "csv"]
    status = await asyncio.to_thread(main, argv)
    assert status == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("BTCUSDT,1.5,2.5,2.0,1.0,")
