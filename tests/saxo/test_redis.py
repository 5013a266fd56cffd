"""The Saxo feed with Redis: tokens shared by processes, one refresher, ticks from Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlewire.feeds.saxo import RedisTokenStore, SaxoFeed
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.saxo.fake import FakeSaxo
from tests.saxo.harness import until
from tests.saxo.service import SERVING, client, saxo_settings, serving
from tests.saxo.test_service import T0, S, _until_price
from tests.store.conftest import RedisServer, redis_server_in


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server_in(tmp_path) as server:
        server_: RedisServer = server
        yield server_.url


async def test_one_lease_holder_refreshes_the_others_read(tmp_path: Path, redis_url: str) -> None:
    async with FakeSaxo(access_ttl=4) as fake:
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        await fake.quote("GBPUSD", "1.3", "1.4", T0)
        common = saxo_settings(fake, tmp_path / "unused.json", redis_url=redis_url, lease_ttl=1.0)
        async with contextlib.AsyncExitStack() as stack:
            api = await stack.enter_async_context(serving(**common, role="api"))
            ingest = {**common, "role": "ingest", "http_listen": ""}
            first = await stack.enter_async_context(serving(**ingest))
            second = await stack.enter_async_context(serving(**ingest))
            c = await stack.enter_async_context(client(api))
            # The API replica runs no feed, but knows from Redis that a login is needed.
            info = (await c.symbols())["EURUSD"]
            assert info.feed_state == pb.FEED_STATE_LOGIN_REQUIRED
            assert "no Saxo login yet" in info.feed_status
            assert (await c.login(fake)).status_code == 200
            await c.until_ready(SERVING)
            await fake.quote("EURUSD", "1.11", "1.2", T0 + S)
            await _until_price(c, "EURUSD", T0 + S)
            assert (await c.symbols())["EURUSD"].feed_state == pb.FEED_STATE_UNSPECIFIED

            holder, standby = (
                (first, second) if first.leased and first.leased.holding else (second, first)
            )
            holding, waiting = holder.feed, standby.feed
            assert isinstance(holding, SaxoFeed) and isinstance(waiting, SaxoFeed)
            await until(lambda: holding.keeper.refreshes >= 2, "two refreshes", fake.changed)
            refreshes = [r for r in fake.token_requests if r["grant_type"] == "refresh_token"]
            assert waiting.keeper.refreshes == 0
            assert len({r["refresh_token"] for r in refreshes}) == len(refreshes)  # none reused
            assert not (tmp_path / "unused.json").exists()  # tokens live in Redis
            store = RedisTokenStore(redis_url, key="cw:saxo:tokens", state_prefix="cw:saxo:login:")
            saved = await store.load()
            await store.close()
            assert saved is not None and saved.access_token in fake.access

            # The holder stops: the standby takes over with the tokens in Redis, no new login.
            logins = sum(r["grant_type"] == "authorization_code" for r in fake.token_requests)
            holder.stop()
            await until(lambda: waiting.status()[0], "the standby streaming", waiting.changed)
            assert standby.leased is not None and standby.leased.holding
            await fake.quote("EURUSD", "1.12", "1.2", T0 + 2 * S)
            await _until_price(c, "EURUSD", T0 + 2 * S)
            assert (
                sum(r["grant_type"] == "authorization_code" for r in fake.token_requests) == logins
            )

            ticks = (await c.api.GetRecentTicks(pb.GetRecentTicksRequest(symbol="EURUSD"))).ticks
            assert [t.bid for t in ticks][-2:] == [1.11, 1.12]
