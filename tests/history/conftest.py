"""Fixtures of the history tests: one real PostgreSQL server for the whole run
(see :mod:`tests.history.pg`), a fresh database per test, and the history
store connected to it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

from candlewire.history import HistoryStore
from tests.history.pg import PostgresServer, postgres

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"t{next(_names)}")


@pytest.fixture
async def history(pg_url: str) -> AsyncIterator[HistoryStore]:
    store = HistoryStore(pg_url, timeout=2.0)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


async def until_writable(store: HistoryStore, within: float = 30.0) -> None:
    """Wait until both of the store's connection pools reach PostgreSQL again
    (after a restart they reconnect on their own backoff)."""
    from candlewire.errors import HistoryUnavailable

    async with asyncio.timeout(within):
        while True:
            try:
                await store.checkpoints()
                await store.ping()
                return
            except HistoryUnavailable:
                await asyncio.sleep(0.1)  # polling a condition, with a deadline
