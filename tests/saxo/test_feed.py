"""SaxoFeed against the fake Saxo over real sockets, with a recording sink."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest

from candlewire.domain import MarketState
from candlewire.errors import ConfigError
from candlewire.feeds.saxo import LoginRejected
from tests.saxo.fake import FAKE_LOG, FakeSaxo
from tests.saxo.harness import Sink, login, make_feed, parts, running, until, until_status

T0 = 1_767_600_000_000_000_000  # 2026-01-05T08:00:00Z, a Monday
S = 1_000_000_000


async def test_login_resolve_stream_and_deltas_before_reply(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json")
        await login(fake, flow)
        await fake.quote("EURUSD", "1.10010", "1.10030", T0)
        await fake.quote("USDJPY", "150.120", "150.140", T0)
        fake.early["EURUSD"] = [("1.10012", "1.10030", T0 + S)]
        feed = make_feed(fake, keeper, ["EUR/USD", "usd-jpy"])
        instruments = await feed.instruments()
        assert {s: i.price_precision for s, i in instruments.items()} == {
            "EURUSD": 5,
            "USDJPY": 3,
        }
        sink = Sink()
        async with running(feed, sink):
            await until_status(feed, True)
            latest = {q.symbol: q for q in sink.got_quotes}
            assert latest["EURUSD"].bid == Decimal("1.10012")  # the early delta, after the snapshot
            await fake.quote("EURUSD", "1.10015", "1.10035", T0 + 2 * S)
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + 2 * S, "the delta")
            quote = sink.got_quotes[-1]
            assert (quote.bid, quote.ask, quote.mid, quote.spread) == (
                Decimal("1.10015"),
                Decimal("1.10035"),
                Decimal("1.10025"),
                Decimal("0.00020"),
            )
            assert (
                sink.got_trades[-1].price == Decimal("1.10025")
                and sink.got_trades[-1].quantity == 0
            )
            assert sink.marks[-1] == ("EURUSD", T0 + 2 * S)
            await fake.quote("EURUSD", "1.10015", "1.10035", T0 + 3 * S, market="Closed")
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + 3 * S, "the closed quote")
            assert sink.got_quotes[-1].market_state is MarketState.CLOSED
            assert sink.closed == ["EURUSD"]
            assert sink.got_trades[-1].time == T0 + 2 * S  # no tick from a closed market


async def test_unknown_symbol_stops_the_start(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json")
        await login(fake, flow)
        feed = make_feed(fake, keeper, ["EURUSD", "XAUEUR"])
        with pytest.raises(ConfigError, match="XAUEUR"):
            await feed.instruments()


async def test_login_state_is_single_use_and_checked(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        flow, _ = parts(fake, tmp_path / "tokens.json")
        redirect = fake.sign_in(await flow.start())
        state = redirect.split("state=")[1]
        code = redirect.split("code=")[1].split("&")[0]
        with pytest.raises(LoginRejected, match="state"):
            await flow.complete("forged-" + state, code)
        await flow.complete(state, code)
        with pytest.raises(LoginRejected, match="already used"):
            await flow.complete(state, code)
        expired_flow, _ = parts(fake, tmp_path / "other.json", state_ttl=0.0)
        redirect = fake.sign_in(await expired_flow.start())
        with pytest.raises(LoginRejected):
            await expired_flow.complete(redirect.split("state=")[1], "x")
        assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600


async def test_token_refresh_reauthorises_the_open_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeSaxo(access_ttl=3) as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json", refresh_margin=2.0)
        await login(fake, flow)
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        feed = make_feed(fake, keeper, ["EURUSD"])
        await feed.instruments()
        sink = Sink()
        async with running(feed, sink):
            await fake.until(lambda: fake.authorizations >= 2, "two re-authorisations")
            await fake.quote("EURUSD", "1.11", "1.2", T0 + S)
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + S, "a quote after")
        assert len(fake.connections) == 1 and fake.expired_closes == 0
        assert keeper.refreshes >= 2
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(FAKE_LOG))
    assert [s for s in fake.all_secrets() if s in ours] == []


async def test_expired_socket_and_dropped_connection_resume_with_message_id(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json")
        await login(fake, flow)
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        feed = make_feed(fake, keeper, ["EURUSD"])
        await feed.instruments()
        sink = Sink()
        async with running(feed, sink):
            await until_status(feed, True)
            await fake.quote("EURUSD", "1.105", "1.2", T0 + S)
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + S, "a streamed quote")
            await fake.drop()
            # Quotes while the client is away: sent into the void, kept by Saxo.
            await fake.quote("EURUSD", "1.11", "1.2", T0 + 2 * S)
            await fake.quote("EURUSD", "1.12", "1.2", T0 + 3 * S)
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + 3 * S, "the missed quotes")
            assert [t.time for t in sink.got_trades] == [T0 + S, T0 + 2 * S, T0 + 3 * S]
            assert "messageid" in fake.connections[-1]
            assert {s.reference for s in fake.subs.values()} == {"EURUSD-1"}  # not re-created
            # The token expires without a re-authorisation: Saxo closes with 1002.
            fake.expire_access_tokens()
            await fake.until(lambda: len(fake.connections) >= 3, "a reconnect after expiry")
            await fake.quote("EURUSD", "1.13", "1.2", T0 + 4 * S)
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + 4 * S, "quotes again")
            assert fake.expired_closes == 1 and keeper.refreshes >= 1


async def test_reset_disconnect_and_a_new_login(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json")
        await login(fake, flow)
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        await fake.quote("GBPUSD", "1.3", "1.4", T0)
        feed = make_feed(fake, keeper, ["EURUSD", "GBPUSD"])
        await feed.instruments()
        sink = Sink()
        async with running(feed, sink):
            await until_status(feed, True)
            await fake.reset_subscriptions(["EURUSD-1"])
            await fake.until(
                lambda: "EURUSD-2" in {s.reference for s in fake.subs.values()}, "resubscribed"
            )
            assert {s.reference for s in fake.subs.values()} == {"EURUSD-2", "GBPUSD-1"}
            await fake.heartbeat()
            await sink.until(lambda: sink.beats >= 1, "a heartbeat")
            last = feed.stream.last_message_id
            await fake.connection_heartbeat()
            await sink.until(lambda: sink.beats >= 2, "a connection heartbeat")
            assert feed.stream.last_message_id == last  # it has no message id
            # A subscription Saxo disabled for good is made again.
            await fake.heartbeat("SubscriptionPermanentlyDisabled")
            await fake.until(
                lambda: {s.reference for s in fake.subs.values()} == {"EURUSD-3", "GBPUSD-2"},
                "both subscriptions made again",
            )
            await fake.disconnect()
            await until_status(feed, False, "login required")
            assert feed.status()[1].startswith("login required")
            await login(fake, flow)
            await until_status(feed, True)
            await fake.quote("GBPUSD", "1.31", "1.4", T0 + S)
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + S, "quotes again")


async def test_401_and_429_are_handled(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json")
        await login(fake, flow)
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        feed = make_feed(fake, keeper, ["EURUSD"])
        fake.fail_next(
            "/ref/v1/instruments",
            429,
            {"X-RateLimit-Session-Remaining": "0", "X-RateLimit-Session-Reset": "0.3"},
        )
        await feed.instruments()
        fake.expire_access_tokens()
        sink = Sink()
        async with running(feed, sink):
            await until_status(feed, True)
        statuses = [(path, status) for _, path, status in fake.requests]
        assert ("/sim/openapi/ref/v1/instruments", 429) in statuses
        assert ("/sim/openapi/trade/v1/prices/subscriptions", 201) in statuses
        assert keeper.refreshes >= 1


async def test_refresh_refused_means_login_required(tmp_path: Path) -> None:
    async with FakeSaxo(access_ttl=2) as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json", refresh_margin=1.0)
        await login(fake, flow)
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        feed = make_feed(fake, keeper, ["EURUSD"])
        await feed.instruments()
        sink = Sink()
        async with running(feed, sink):
            await until_status(feed, True)
            fake.revoke_refresh_tokens()
            await until_status(feed, False, "login required")
            await login(fake, flow)
            await until_status(feed, True)


async def test_circuit_opens_after_failures_and_probes_until_saxo_is_back(tmp_path: Path) -> None:
    async with FakeSaxo() as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json")
        await login(fake, flow)
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        feed = make_feed(fake, keeper, ["EURUSD"], breaker_failures=3, probe_interval=0.3)
        await feed.instruments()
        fake.refuse_streaming = 503
        sink = Sink()
        async with running(feed, sink):
            await until_status(feed, False, "circuit open")
            refused = fake.refused
            assert refused >= 3
            await until(lambda: fake.refused > refused, "a probe", fake.changed)  # still probing
            fake.refuse_streaming = 0
            await until_status(feed, True)
            # Saxo asks for a reconnect: the same context resumes from the last message.
            await fake.quote("EURUSD", "1.11", "1.2", T0 + S)
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + S, "a quote")
            connections = len(fake.connections)
            await fake.control("_reconnect", {})
            await fake.until(lambda: len(fake.connections) > connections, "the reconnect")
            assert "messageid" in fake.connections[-1]
            await fake.quote("EURUSD", "1.12", "1.2", T0 + 2 * S)
            await sink.until(lambda: sink.got_quotes[-1].time == T0 + 2 * S, "quotes again")


async def test_a_failed_subscription_is_made_again_on_the_resumed_connection(
    tmp_path: Path,
) -> None:
    async with FakeSaxo() as fake:
        flow, keeper = parts(fake, tmp_path / "tokens.json")
        await login(fake, flow)
        await fake.quote("EURUSD", "1.1", "1.2", T0)
        await fake.quote("GBPUSD", "1.3", "1.4", T0)
        feed = make_feed(fake, keeper, ["EURUSD", "GBPUSD"])
        await feed.instruments()
        # EURUSD streams a frame (so the connection can be resumed), then GBPUSD's
        # subscription fails: the connection is torn down and resumed.
        fake.early["EURUSD"] = [("1.105", "1.2", T0 + S)]
        fake.fail_next("/trade/v1/prices/subscriptions", 503, after=1)
        sink = Sink()
        async with running(feed, sink):
            await until_status(feed, True)
        assert "messageid" in fake.connections[-1]
        assert {s.symbol for s in fake.subs.values()} == {"EURUSD", "GBPUSD"}
        assert ("/sim/openapi/trade/v1/prices/subscriptions", 503) in [
            (path, status) for _, path, status in fake.requests
        ]
