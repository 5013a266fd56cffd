"""``candlewire saxo login``, a real process against the fake Saxo."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from candlewire.feeds.saxo import FileTokenStore
from tests.saxo.fake import WAIT, FakeSaxo


async def _login(fake: FakeSaxo, token_file: Path, answer: str | None) -> tuple[int, str]:
    env = {
        **os.environ,
        "CANDLEWIRE_SAXO_APP_KEY": fake.app_key,
        "CANDLEWIRE_SAXO_AUTH_URL": fake.auth_url,
        "CANDLEWIRE_SAXO_REST_URL": fake.rest_url,
        "CANDLEWIRE_SAXO_STREAMING_URL": fake.streaming_url,
        "CANDLEWIRE_SAXO_TOKEN_FILE": str(token_file),
        "CANDLEWIRE_SYMBOLS": "EURUSD",
    }
    env.pop("CANDLEWIRE_REDIS_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "candlewire",
        "saxo",
        "login",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    output: list[str] = []
    async with asyncio.timeout(WAIT):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "".join(output)
            output.append(line)
            if line.startswith("http"):
                break
        redirect = fake.sign_in(line.strip()) if answer is None else answer
        process.stdin.write(redirect.encode() + b"\n")
        await process.stdin.drain()
        rest = (await process.stdout.read()).decode()
        code = await process.wait()
    return code, "".join(output) + rest


async def test_headless_login_saves_the_tokens(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        code, output = await _login(fake, tmp_path / "tokens.json", None)
        assert code == 0, output
        assert "login saved" in output
        tokens = await FileTokenStore(tmp_path / "tokens.json").load()
        assert tokens is not None and tokens.access_token in fake.access
        assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
        assert [s for s in fake.all_secrets() if s in output] == []


async def test_headless_login_refuses_a_forged_state(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        forged = "http://localhost:8080/auth/saxo/callback?code=abc&state=forged"
        code, output = await _login(fake, tmp_path / "tokens.json", forged)
        assert code == 1 and "state" in output
        assert not (tmp_path / "tokens.json").exists()
