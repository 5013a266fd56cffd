"""Fixtures of the store tests: a real ``redis-server`` and both stores.

The server runs on a free port without persistence, in a temp dir. Start-up
waits for its "Ready to accept connections" log line and then a PING, with a
deadline; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from candlewire.store.base import Store
from candlewire.store.memory import MemoryStore
from candlewire.store.redis import RedisStore

__all__ = ["MakeStore", "RedisServer"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_WITHIN = 10.0  # seconds

MakeStore = Callable[..., Awaitable[Store]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` child process on a fixed port, restartable."""

    def __init__(self, directory: Path, port: int | None = None, *, persist: bool = False) -> None:
        self.directory = directory
        self.persist = persist
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        assert self.process is None, "already running"
        process = self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--dir", str(self.directory), "--loglevel", "notice"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert process.stdout is not None
        deadline = time.monotonic() + START_WITHIN
        output = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"Ready to accept connections" not in output:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.stop()
                    pytest.fail(f"redis-server did not start: {output.decode(errors='replace')}")
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    self.stop()
                    pytest.fail(f"redis-server exited: {output.decode(errors='replace')}")
                output += chunk
        # Keep draining its log so the pipe never fills: close our end instead.
        process.stdout.close()
        with self.client() as client:
            assert client.ping()

    def stop(self) -> None:
        """Kill the server (no shutdown save; the data is gone)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()
        process.wait(timeout=START_WITHIN)
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()


@contextlib.contextmanager
def redis_server_in(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the tests that only need a clean dataset."""
    with redis_server_in(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_server(shared_redis: RedisServer) -> RedisServer:
    """The shared server, flushed."""
    with shared_redis.client() as client:
        client.flushall()
    return shared_redis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone (to stop and restart)."""
    with redis_server_in(tmp_path) as server:
        yield server


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone that keeps its data across a kill (AOF, fsync always)."""
    server = RedisServer(tmp_path, persist=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """Builds stores of the parameter's kind (``retention``, ``log_size``)."""
    made: list[Store] = []
    server: RedisServer | None = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")

    async def make(*, retention: int = 5000, log_size: int = 4096) -> Store:
        store: Store
        if server is None:
            store = MemoryStore(retention=retention, log_size=log_size)
        else:
            # Each store of a test gets its own prefix: stores never share data.
            redis_store = RedisStore(
                server.url, prefix=f"t{len(made)}:", retention=retention, log_size=log_size
            )
            await redis_store.connect()
            store = redis_store
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
