"""The service on the Saxo feed: login, readiness, quotes, candles and ticks through the API."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.saxo.fake import FAKE_LOG, WAIT, FakeSaxo
from tests.saxo.service import NOT_SERVING, SERVING, Client, client, saxo_settings, serving

S = 1_000_000_000
T0 = 1_767_600_000 * S  # 2026-01-05T08:00:00Z, a Monday


def _mid(bid: str, ask: str) -> float:
    return float((Decimal(bid) + Decimal(ask)) / 2)


async def _until_price(c: Client, symbol: str, time: int) -> pb.Price:
    """Poll GetPrice (there is no quote stream) until it shows ``time``, with a deadline."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                price = (await c.api.GetPrice(pb.GetPriceRequest(symbol=symbol))).price
                if price.event_time.ToNanoseconds() >= time:
                    return price
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.01)


async def test_login_required_then_quotes_candles_and_ticks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeSaxo() as fake:
        await fake.quote("EURUSD", "1.10010", "1.10030", T0)
        await fake.quote("GBPUSD", "1.27000", "1.27020", T0)
        settings = saxo_settings(fake, tmp_path / "tokens.json")
        async with serving(**settings) as app, client(app) as c:
            # Started without a login: alive, not ready, and saying why.
            assert await c.readiness() == NOT_SERVING
            info = await c.symbols()
            assert set(info) == {"EURUSD", "GBPUSD"}
            assert info["EURUSD"].feed_state == pb.FEED_STATE_LOGIN_REQUIRED
            assert "login required" in info["EURUSD"].feed_status
            assert info["GBPUSD"].price_precision == 5  # provisional until a login
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await c.api.GetPrice(pb.GetPriceRequest(symbol="EURUSD"))
            assert failed.value.code() is grpc.StatusCode.UNAVAILABLE

            # A forged state is refused; the real login works once.
            start = await c.http.get("/auth/saxo/login")
            assert start.status_code == 302
            redirect = fake.sign_in(start.headers["location"])
            forged = redirect.replace("state=", "state=x")
            assert (await c.callback(forged)).status_code == 400
            answer = await c.callback(redirect)
            assert answer.status_code == 200 and "login complete" in answer.text
            assert (await c.callback(redirect)).status_code == 400  # reused
            await c.until_ready(SERVING)
            info = await c.symbols()
            assert info["EURUSD"].feed_state == pb.FEED_STATE_OK
            assert info["EURUSD"].price_precision == 5  # 4 decimals + a decimal pip
            assert info["GBPUSD"].price_precision == 4  # resolved from Saxo's Format

            # Quotes: exactly what Saxo sent.
            await fake.quote("EURUSD", "1.10015", "1.10035", T0 + S // 2, digits=7)
            price = await _until_price(c, "EURUSD", T0 + S // 2)
            assert (price.bid, price.ask) == (1.10015, 1.10035)
            assert price.mid == _mid("1.10015", "1.10035")
            assert price.spread == float(Decimal("1.10035") - Decimal("1.10015"))
            assert price.market_state == pb.MARKET_STATE_OPEN
            assert price.price_type == pb.PRICE_TYPE_TRADABLE
            assert price.bid_size == 1_000_000 and price.source == pb.SOURCE_LIVE

            # Candles of mids: ticks in one second, then the next second closes it.
            ticks = [("1.10020", "1.10040"), ("1.10000", "1.10030"), ("1.10050", "1.10060")]
            for n, (bid, ask) in enumerate(ticks):
                await fake.quote("EURUSD", bid, ask, T0 + S + n * S // 10)
            await fake.quote("EURUSD", "1.10040", "1.10060", T0 + 2 * S)
            await _until_price(c, "EURUSD", T0 + 2 * S)
            candles = (
                await c.api.GetCandles(
                    pb.GetCandlesRequest(symbol="EURUSD", interval=pb.INTERVAL_1S)
                )
            ).candles
            second = {x.open_time.ToNanoseconds(): x for x in candles}[T0 + S]
            mids = [_mid(b, a) for b, a in ticks]
            assert (second.open, second.high, second.low, second.close) == (
                mids[0],
                max(mids),
                min(mids),
                mids[-1],
            )
            assert second.trade_count == 3 and second.volume == 0 and second.closed

            # Recent ticks, oldest first, from the memory store.
            recent = (
                await c.api.GetRecentTicks(pb.GetRecentTicksRequest(symbol="eurusd", limit=3))
            ).ticks
            assert [(t.bid, t.ask) for t in recent] == [
                (1.10000, 1.10030),
                (1.10050, 1.10060),
                (1.10040, 1.10060),
            ]
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await c.api.GetRecentTicks(pb.GetRecentTicksRequest(symbol="EURUSD", limit=-1))
            assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT

            # Saxo ends the session: login required, and back after a new login.
            await fake.disconnect()
            await c.until_ready(NOT_SERVING)
            assert (await c.symbols())["GBPUSD"].feed_state == pb.FEED_STATE_LOGIN_REQUIRED
            assert (await c.login(fake)).status_code == 200
            await c.until_ready(SERVING)
            await fake.quote("GBPUSD", "1.27010", "1.27030", T0 + 3 * S)
            price = await _until_price(c, "GBPUSD", T0 + 3 * S)
            assert price.mid == _mid("1.27010", "1.27030")
            page = (await c.http.get("/")).text

    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(FAKE_LOG))
    secrets = fake.all_secrets()
    assert [s for s in secrets if s in ours] == []
    assert [s for s in secrets if s in page] == []


async def test_login_routes_are_for_allowed_addresses_only(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        settings = saxo_settings(fake, tmp_path / "t.json", saxo_login_allow="10.0.0.0/8")
        async with serving(**settings) as app, client(app) as c:
            assert (await c.http.get("/auth/saxo/login")).status_code == 404
            assert (await c.http.get("/auth/saxo/callback?code=a&state=b")).status_code == 404


async def test_closed_market_makes_no_candles(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        await fake.quote("GBPUSD", "1.3", "1.4", T0)
        settings = saxo_settings(fake, tmp_path / "tokens.json")
        async with serving(**settings) as app, client(app) as c:
            assert (await c.login(fake)).status_code == 200
            await c.until_ready(SERVING)
            await fake.quote("EURUSD", "1.11", "1.2", T0 + 10 * S)
            await fake.quote("EURUSD", "1.12", "1.2", T0 + 70 * S, market="Closed")
            price = await _until_price(c, "EURUSD", T0 + 70 * S)
            assert price.market_state == pb.MARKET_STATE_CLOSED
            # Two days later the market opens again.
            reopen = T0 + 48 * 3600 * S
            await fake.quote("EURUSD", "1.13", "1.2", reopen, market="Open")
            await _until_price(c, "EURUSD", reopen)
            candles = (
                await c.api.GetCandles(
                    pb.GetCandlesRequest(symbol="EURUSD", interval=pb.INTERVAL_1M)
                )
            ).candles
            opens = [x.open_time.ToNanoseconds() for x in candles]
            assert opens == [T0, reopen]  # a gap, not 2,879 flat minutes
            assert candles[0].closed and candles[0].trade_count == 1
