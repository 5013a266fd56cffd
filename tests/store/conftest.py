"""Fixtures of the store tests: a real ``redis-server``, a real 3-master
Redis Cluster, and the stores on them.

A server runs on a free port without persistence, in a temp dir. Start-up
waits for its "Ready to accept connections" log line and then a PING, with a
deadline. The cluster is three such servers with ``--cluster-enabled yes``
joined by ``redis-cli --cluster create``; it is ready when every node's
``CLUSTER INFO`` says ``cluster_state:ok`` (polled, with a deadline).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
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

__all__ = ["MakeStore", "RedisClusterNodes", "RedisServer", "cluster_prefix"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
START_WITHIN = 10.0  # seconds

MakeStore = Callable[..., Awaitable[Store]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port
    pytest.fail("no free port pair for a cluster node")


class RedisServer:
    """A ``redis-server`` child process on a fixed port, restartable."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        persist: bool = False,
        cluster: bool = False,
    ) -> None:
        self.directory = directory
        self.persist = persist
        self.cluster = cluster
        self.port = port or (free_cluster_port() if cluster else free_port())
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
             "--dir", str(self.directory), "--loglevel", "notice",
             *(["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
               if self.cluster else [])],
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


class RedisClusterNodes:
    """Three cluster-enabled ``redis-server`` processes joined into one
    cluster of three masters (no replicas)."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.servers = [RedisServer(directory, cluster=True) for _ in range(size)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{server.port}" for server in self.servers]
        created = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=START_WITHIN,
            check=False,
        )
        if created.returncode != 0:
            self.stop()
            pytest.fail(f"redis-cli --cluster create failed: {created.stdout!r} {created.stderr!r}")
        deadline = time.monotonic() + START_WITHIN
        waiting = list(self.servers)
        while waiting:
            with waiting[0].client() as client:
                info = client.execute_command("CLUSTER INFO")
            # redis-py parses the reply into a dict; the raw text is a fallback.
            text = info.decode() if isinstance(info, bytes) else str(info)
            if (isinstance(info, dict) and info.get("cluster_state") == "ok") or (
                "cluster_state:ok" in text
            ):
                waiting.pop(0)
            elif time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the cluster did not become ready: {text}")
            else:
                time.sleep(0.05)  # polling CLUSTER INFO until the condition holds

    def node_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        with self.servers[0].client() as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for low, high, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if low <= slot <= high:
                    return int(master[1])
        raise AssertionError(f"slot of {key} is not served")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """One 3-master cluster for the session; tests keep apart by key prefix."""
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


_prefixes = itertools.count()


def cluster_prefix() -> str:
    """A key prefix no other test on the shared cluster uses."""
    return f"c{next(_prefixes)}:"


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


@pytest.fixture(params=["memory", "redis", "cluster"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """Builds stores of the parameter's kind (``retention``, ``log_size``,
    ``trade_retention``, ``trade_window``)."""
    made: list[Store] = []
    url: str | None = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    elif request.param == "cluster":
        url = request.getfixturevalue("redis_cluster").url

    async def make(
        *,
        retention: int = 5000,
        log_size: int = 4096,
        trade_retention: int = 100_000,
        trade_window: int | None = None,
    ) -> Store:
        store: Store
        trades = {"trade_retention": trade_retention, "trade_window": trade_window}
        if url is None:
            store = MemoryStore(retention=retention, log_size=log_size, **trades)
        else:
            # Each store of a test gets its own prefix: stores never share data.
            prefix = cluster_prefix() if request.param == "cluster" else f"t{len(made)}:"
            redis_store = RedisStore(
                url, prefix=prefix, retention=retention, log_size=log_size, **trades
            )
            await redis_store.connect()
            store = redis_store
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
