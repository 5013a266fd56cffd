"""Client options: declared once, typed by ``decimals``, defaulted from the environment."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api

from candlewire.app import App
from candlewire_client import (
    DEFAULT_TARGET,
    CandlewireClient,
    Client,
    ClientOptions,
    RetryPolicy,
)
from candlewire_client import cli as client_cli
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.client.conftest import FakeService

ROOT = Path(__file__).resolve().parents[2]


async def _symbols(request: Any, context: Any) -> pb.ListSymbolsResponse:
    return pb.ListSymbolsResponse(symbols=[pb.SymbolInfo(symbol="BTCUSDT")])


async def _prices(request: Any, context: Any) -> pb.BatchGetPricesResponse:
    return pb.BatchGetPricesResponse(prices=[pb.Price(symbol=s) for s in request.symbols])


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("CANDLEWIRE_TARGET", "CANDLEWIRE_API_KEY", "CANDLEWIRE_BEARER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_target_comes_from_the_environment(app: App, no_env: pytest.MonkeyPatch) -> None:
    assert CandlewireClient().target == DEFAULT_TARGET
    target = f"127.0.0.1:{app.port}"
    no_env.setenv("CANDLEWIRE_TARGET", target)
    async with CandlewireClient() as client:
        assert client.target == target
        assert [s.symbol for s in await client.list_symbols()] == ["BTCUSDT", "ETHUSDT"]
    with Client() as blocking:
        assert blocking.target == target
        assert [s.symbol for s in await asyncio.to_thread(blocking.list_symbols)] == [
            "BTCUSDT",
            "ETHUSDT",
        ]
    assert CandlewireClient("elsewhere:1").target == "elsewhere:1"  # an argument wins
    no_env.setenv("CANDLEWIRE_TARGET", "")  # empty counts as unset
    assert CandlewireClient().target == DEFAULT_TARGET


@pytest.mark.parametrize(
    ("env", "kwargs", "sent"),
    [
        ({"CANDLEWIRE_API_KEY": "env-key"}, {}, ("env-key", None)),
        ({"CANDLEWIRE_BEARER_TOKEN": "env-token"}, {}, (None, "Bearer env-token")),
        ({"CANDLEWIRE_API_KEY": "env-key"}, {"api_key": "arg-key"}, ("arg-key", None)),
        ({"CANDLEWIRE_API_KEY": "env-key"}, {"api_key": ""}, (None, None)),  # explicitly none
        ({"CANDLEWIRE_API_KEY": ""}, {}, (None, None)),
        (
            {"CANDLEWIRE_API_KEY": "k", "CANDLEWIRE_BEARER_TOKEN": "t"},
            {"bearer_token": None},
            ("k", "Bearer t"),
        ),
    ],
)
async def test_credentials_come_from_the_environment(
    fake: FakeService,
    no_env: pytest.MonkeyPatch,
    env: dict[str, str],
    kwargs: dict[str, Any],
    sent: tuple[str | None, str | None],
) -> None:
    fake.handlers["ListSymbols"] = _symbols
    await fake.start()
    for name, value in env.items():
        no_env.setenv(name, value)
    async with CandlewireClient(fake.target, **kwargs) as client:
        await client.list_symbols()
    with Client(fake.target, **kwargs) as blocking:
        await asyncio.to_thread(blocking.list_symbols)
    assert len(fake.metadata) == 2
    for metadata in fake.metadata:
        assert (metadata.get("x-api-key"), metadata.get("authorization")) == sent


async def test_the_cli_takes_its_defaults_from_the_library(
    fake: FakeService, no_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handlers["BatchGetPrices"] = _prices
    await fake.start()
    no_env.setenv("CANDLEWIRE_TARGET", fake.target)
    no_env.setenv("CANDLEWIRE_API_KEY", "env-key")
    no_env.setenv("CANDLEWIRE_BEARER_TOKEN", "env-token")
    argv = ["price", "BTCUSDT", "--format", "csv"]
    assert await asyncio.to_thread(client_cli.main, argv) == 0
    assert await asyncio.to_thread(client_cli.main, [*argv, "--api-key", "flag-key"]) == 0
    assert capsys.readouterr().out.count("BTCUSDT,,,,,,,,,true,no quote yet") == 2
    assert [(m["x-api-key"], m["authorization"]) for m in fake.metadata] == [
        ("env-key", "Bearer env-token"),
        ("flag-key", "Bearer env-token"),
    ]


def test_every_option_is_still_a_keyword_argument() -> None:
    """Keyword calls written against the earlier explicit signature keep working."""
    options: ClientOptions = {
        "tls": False,
        "root_certificates": None,
        "private_key": None,
        "certificate_chain": None,
        "api_key": "k",
        "bearer_token": "t",
        "metadata": [("x-desk", "fx")],
        "timeout": None,
        "keepalive": 30.0,
        "retry": RetryPolicy(initial=1.0),
        "options": [("grpc.max_receive_message_length", 1 << 20)],
    }
    assert set(options) == set(ClientOptions.__annotations__)
    client = CandlewireClient("h:1", decimals=True, **options)
    assert (client.target, client.decimals, client.timeout) == ("h:1", True, None)
    assert client.retry == RetryPolicy(initial=1.0)
    assert client._metadata == (
        ("x-api-key", "k"),
        ("authorization", "Bearer t"),
        ("x-desk", "fx"),
    )
    assert dict(client._options)["grpc.keepalive_time_ms"] == 30_000
    assert dict(client._options)["grpc.max_receive_message_length"] == 1 << 20
    defaults = CandlewireClient("h:1")
    assert (defaults.decimals, defaults.timeout, defaults.retry) == (False, 10.0, RetryPolicy())
    with Client("h:1", decimals=True, **options) as blocking:
        assert blocking.aio.decimals is True
        assert blocking.aio._metadata == client._metadata


def test_a_misspelt_option_is_refused() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'api_kye'"):
        CandlewireClient("h:1", api_kye="k")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unexpected keyword argument 'timout'"):
        Client("h:1", timout=3)  # type: ignore[call-overload]


def test_mypy_types_the_number_from_decimals(tmp_path: Path) -> None:
    source = tmp_path / "typed.py"
    source.write_text(
        textwrap.dedent(
            """
            from candlewire_client import CandlewireClient, Client
            reveal_type(CandlewireClient(decimals=True))
            reveal_type(CandlewireClient())
            reveal_type(CandlewireClient("h:1", decimals=False, api_key="k", timeout=None))
            reveal_type(Client(decimals=True, tls=True))
            reveal_type(Client("h:1"))
            CandlewireClient(timeout="soon")
            """
        )
    )
    out, _, status = mypy_api.run(
        [
            "--strict",
            "--no-error-summary",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            str(source),
        ]
    )
    revealed = [
        line.split("Revealed type is ")[1] for line in out.splitlines() if "Revealed" in line
    ]
    assert revealed == [
        '"candlewire_client.aio.CandlewireClient[decimal.Decimal]"',
        '"candlewire_client.aio.CandlewireClient[float]"',
        '"candlewire_client.aio.CandlewireClient[float]"',
        '"candlewire_client.blocking.Client[decimal.Decimal]"',
        '"candlewire_client.blocking.Client[float]"',
    ]
    assert status == 1
    assert "typed.py:8: error: No overload variant" in out
