"""The embedded defaults start without Redis or websockets: their libraries
(and the venue feeds) are imported only when the settings ask for them."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import asyncio, json, sys
from candlewire.app import App
from candlewire.config import load

async def main():
    async with App(load(grpc_listen="127.0.0.1:0", http_listen="")) as app:
        assert app.port > 0
        loaded = sorted(
            name for name in sys.modules
            if name.split(".")[0] in ("redis", "websockets", "httpx")
            or name.startswith(("candlewire.store.redis", "candlewire.feeds.binance"))
        )
    print(json.dumps(loaded))

asyncio.run(main())
"""


def test_the_embedded_defaults_load_no_redis_nor_venue_code() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
