"""The client distribution stands alone: installed into a fresh virtualenv, it pulls
in gRPC and protobuf only, and works against a real server without the server's code.

The first test builds ``clients/python`` and installs it with pip (from the
package index, through pip's cache) into an empty virtualenv, then runs a script
and the ``candlewire-client`` command there against the service running in this
test's process. It is marked ``venv`` (deselect with ``-m 'not venv'``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from candlewire.app import App
from candlewire_client import CandlewireClient
from tests.client.conftest import WAIT
from tests.scripted import ScriptedFeed, sec

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
DIRECT = {"grpcio", "grpcio-health-checking", "protobuf", "googleapis-common-protos"}
SERVER_ONLY = {"candlewire", "redis", "granian", "pydantic", "websockets", "httpx", "pandas"}
INSTALL_TIMEOUT = 300.0

# What a program sees of the candlewire packages it imported.
LOADED = """
import json, sys
print(json.dumps(sorted(m for m in sys.modules if m.startswith("candlewire"))))
"""

INVENTORY = """
import importlib.metadata as md, json
print(json.dumps({
    d.metadata["Name"]: {"version": d.version, "requires": d.requires or []}
    for d in md.distributions()
}))
"""

SCRIPT = """
import sys
from candlewire_client import CandleEvent, Client, SnapshotEnd

with Client(decimals=True) as client:  # CANDLEWIRE_TARGET says where
    price = client.get_price("BTCUSDT")
    print("price", price.symbol, price.bid, price.ask, price.mid)
    for c in client.fetch_candles("BTCUSDT", "1m", start="2026-01-01"):
        print("candle", c.open_time.isoformat(), c.open, c.high, c.low, c.close, c.volume)
    with client.subscribe_candles("BTCUSDT@1s", history=2) as stream:
        for event in stream:
            if isinstance(event, SnapshotEnd):
                break
            if isinstance(event, CandleEvent):
                print("event", event.candle.open_time.isoformat(), event.candle.close)
print("imported", sorted({m.split(".")[0] for m in sys.modules if m.startswith("candlewire")}))
"""


async def _run(
    argv: Sequence[str | Path],
    env: dict[str, str] | None = None,
    within: float = WAIT,
    cwd: Path | None = None,
) -> str:
    """Run a program to its end; its stdout (a failure shows stderr)."""
    process = await asyncio.create_subprocess_exec(
        *map(str, argv),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"{argv} failed:\n{err.decode()}"
    return out.decode()


def _closure(inventory: dict[str, dict[str, list[str]]], root: str) -> set[str]:
    """``root`` and every distribution it needs (no extras), as canonical names."""
    requires = {canonicalize_name(name): info["requires"] for name, info in inventory.items()}
    needed: set[str] = set()
    todo = [canonicalize_name(root)]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        for text in requires[name]:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return needed


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWIRE_", "PYTHON"))}
    return {**env, **extra}


@pytest.mark.venv
@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
async def test_the_client_installs_and_runs_alone(
    app: App, feed: ScriptedFeed, tmp_path: Path
) -> None:
    await feed.quote("BTCUSDT", sec(30), "64000.5", "64001.25")
    await feed.trades([("BTCUSDT", sec(i * 20), f"{64000 + i}.5", "0.25") for i in range(5)])
    target = f"127.0.0.1:{app.port}"
    async with CandlewireClient(target, decimals=True) as client:
        expected_candles = await client.fetch_candles("BTCUSDT", "1m", start="2026-01-01")
        expected_price = await client.get_price("BTCUSDT")
        recent = await client.fetch_candles("BTCUSDT", "1s", limit=2)

    # A copy of the sources, so that building leaves nothing in the checkout.
    source = tmp_path / "src"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    # A virtualenv without pip; this interpreter's pip installs into it.
    venv = tmp_path / "venv"
    await _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    await _run(
        [
            sys.executable, "-m", "pip", "--python", python, "install",
            "--quiet", "--disable-pip-version-check", "--no-input", "--no-compile", source,
        ],
        env=_clean_env(),
        within=INSTALL_TIMEOUT,
    )  # fmt: skip

    # Run from tmp_path, so that nothing of this checkout is on the path.
    inventory = json.loads(await _run([python, "-c", INVENTORY], env=_clean_env(), cwd=tmp_path))
    installed = {canonicalize_name(name) for name in inventory}
    assert "candlewire-client" in installed
    assert installed == _closure(inventory, "candlewire-client")  # nothing else
    direct = {
        canonicalize_name(Requirement(r).name)
        for r in inventory["candlewire-client"]["requires"]
        if Requirement(r).marker is None
    }
    assert direct == DIRECT
    assert not installed & SERVER_ONLY

    env = _clean_env(CANDLEWIRE_TARGET=target)
    out = (await _run([python, "-c", SCRIPT], env=env, cwd=tmp_path)).splitlines()
    p = expected_price
    assert out[0] == f"price BTCUSDT {p.bid} {p.ask} {p.mid}"
    assert out[1 : 1 + len(expected_candles)] == [
        f"candle {c.open_time.isoformat()} {c.open} {c.high} {c.low} {c.close} {c.volume}"
        for c in expected_candles
    ]
    assert len(expected_candles) == 2
    assert out[1 + len(expected_candles) :] == [
        *(f"event {c.open_time.isoformat()} {c.close}" for c in recent),
        "imported ['candlewire_client', 'candlewire_protos']",
    ]

    command = venv / "bin" / "candlewire-client"
    assert "price,candles,watch,trades,symbols,health" in await _run(
        [command, "--help"], env=env, cwd=tmp_path
    )
    csv = await _run([command, "price", "BTCUSDT", "--format", "csv"], env=env, cwd=tmp_path)
    assert csv.splitlines()[1].startswith(f"BTCUSDT,{p.bid},{p.ask},{p.mid},")


@pytest.mark.parametrize(
    "program",
    [
        "import candlewire_client",
        "import candlewire_client.cli as cli; cli.main(['--help'])",
        "import candlewire_client.cli as cli; cli.main(['price', 'BTCUSDT'])",
    ],
)
async def test_no_server_module_is_imported(app: App, feed: ScriptedFeed, program: str) -> None:
    """Here the server package is installed too: the client still does not load it."""
    await feed.quote("BTCUSDT", sec(1), "10.5", "11")
    code = textwrap.dedent(
        f"""
        try:
            {program}
        except SystemExit:
            pass
        """
    )
    env = _clean_env(CANDLEWIRE_TARGET=f"127.0.0.1:{app.port}")
    out = await _run([sys.executable, "-c", code + LOADED], env=env)
    loaded = json.loads(out.splitlines()[-1])
    assert "candlewire_client" in loaded
    assert [m for m in loaded if m == "candlewire" or m.startswith("candlewire.")] == []
    if "price" in program:
        assert "BTCUSDT" in out and "10.5" in out
