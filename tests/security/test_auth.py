"""Authentication and scopes on every RPC, on the gRPC port and through the gateway."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from candlewire.api.auth import DEFAULT_SCOPE, METHOD_SCOPES, SCOPES, scope_of
from candlewire.api.keys import add_key, hash_key
from tests.scripted import ScriptedFeed, running, sec
from tests.security.conftest import (
    METHODS,
    Keys,
    admitted,
    call,
    error_reason,
    grpc_web_frame,
    request_for,
)

DENIED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def _with_data(feed: ScriptedFeed) -> None:
    await feed.trade("BTCUSDT", sec(5), "100")
    await feed.quote("BTCUSDT", sec(5), "99", "101")


def test_every_method_of_the_service_has_a_scope() -> None:
    assert set(METHODS) == set(METHOD_SCOPES), "add new methods to api.auth.METHOD_SCOPES"
    assert set(METHOD_SCOPES.values()) <= SCOPES
    assert scope_of("/marketdata.v1.MarketDataService/SomethingNew") == DEFAULT_SCOPE
    assert scope_of("/grpc.health.v1.Health/Check") is None


@pytest.mark.parametrize("path", sorted(METHODS))
async def test_each_method_refuses_missing_wrong_and_unscoped_credentials(
    path: str, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    feed = ScriptedFeed()
    async with (
        running(feed, api_keys_file=str(keys.path)) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await _with_data(feed)
        code, status = await call(channel, path)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(status) == "CREDENTIAL_MISSING"

        code, status = await call(channel, path, [("x-api-key", "cwk_" + "x" * 43)])
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(status) == "API_KEY_INVALID"
        code, _ = await call(channel, path, [("authorization", "Bearer not-a-key")])
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = await call(channel, path, [("authorization", f"Basic {keys.reader}")])
        assert code == grpc.StatusCode.UNAUTHENTICATED

        scope = METHOD_SCOPES[path]
        code, status = await call(channel, path, [("x-api-key", keys.lacking(scope))])
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(status) == "SCOPE_MISSING"
        assert status is not None and scope in status.message

        for key in (keys.having(path), keys.reader):
            code, _ = await call(channel, path, [("x-api-key", key)])
            assert admitted(path, code), code
        code, _ = await call(channel, path, [("authorization", f"Bearer {keys.reader}")])
        assert admitted(path, code), code
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for key in keys.all():
        assert key not in logged


async def test_health_and_reflection_need_no_credential(keys: Keys) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with (
        running(ScriptedFeed(), api_keys_file=str(keys.path)) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for response in responses:
            names = {s.name for s in response.list_services_response.service}
            assert "marketdata.v1.MarketDataService" in names
            break


async def test_closed_reflection_needs_a_key(keys: Keys) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with (
        running(ScriptedFeed(), api_keys_file=str(keys.path), reflection_open=False) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.ServerReflectionInfo(iter([request])):
                pass
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async for response in stub.ServerReflectionInfo(
            iter([request]), metadata=(("x-api-key", keys.reader),)
        ):
            assert response.list_services_response.service
            break


async def test_the_gateway_applies_the_same_policy(keys: Keys) -> None:
    feed = ScriptedFeed()
    path = "/marketdata.v1.MarketDataService/GetPrice"
    async with running(feed, api_keys_file=str(keys.path)) as app:
        await _with_data(feed)
        assert app.gateway is not None
        base = f"http://127.0.0.1:{app.gateway.port}"
        headers = {"content-type": "application/grpc-web+proto"}
        body = grpc_web_frame(request_for(path))
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            refused = await http.post(path, content=body, headers=headers)
            assert refused.headers["grpc-status"] == str(grpc.StatusCode.UNAUTHENTICATED.value[0])
            wrong = await http.post(path, content=body, headers={**headers, "x-api-key": "nope"})
            assert wrong.headers["grpc-status"] == str(grpc.StatusCode.UNAUTHENTICATED.value[0])
            unscoped = await http.post(
                path, content=body, headers={**headers, "x-api-key": keys.only["candles"]}
            )
            assert unscoped.headers["grpc-status"] == str(
                grpc.StatusCode.PERMISSION_DENIED.value[0]
            )
            for auth in ({"x-api-key": keys.reader}, {"authorization": f"Bearer {keys.reader}"}):
                ok = await http.post(path, content=body, headers={**headers, **auth})
                assert ok.status_code == 200
                assert b"grpc-status:0" in ok.content.replace(b" ", b"")


async def test_anonymous_access_has_its_scopes_only(keys: Keys) -> None:
    feed = ScriptedFeed()
    async with (
        running(
            feed, api_keys_file=str(keys.path), anonymous_scopes="prices,symbols,candles,streams"
        ) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await _with_data(feed)
        for path in METHODS:
            code, _ = await call(channel, path)
            assert admitted(path, code), path
        # A wrong credential is still refused: anonymous means "none given".
        code, _ = await call(channel, sorted(METHODS)[0], [("x-api-key", "wrong")])
        assert code == grpc.StatusCode.UNAUTHENTICATED
    async with (
        running(feed, api_keys_file=str(keys.path), anonymous_scopes="prices") as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        code, _ = await call(channel, "/marketdata.v1.MarketDataService/GetCandles")
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_keys_are_reloaded_when_the_file_changes(keys: Keys) -> None:
    path = "/marketdata.v1.MarketDataService/ListSymbols"
    async with (
        running(ScriptedFeed(), api_keys_file=str(keys.path)) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        assert app.gatekeeper is not None and app.gatekeeper.authenticator.keys is not None
        ring = app.gatekeeper.authenticator.keys
        ring.reload_interval = 0.0  # check the file on every call
        fresh = add_key(keys.path, "added-later")
        assert (await call(channel, path, [("x-api-key", fresh)]))[0] == grpc.StatusCode.OK
        assert ring.reloads == 1
        # admitted before the change: what was decided for it does not outlive the key
        assert (await call(channel, path, [("x-api-key", keys.reader)]))[0] == grpc.StatusCode.OK

        document = json.loads(keys.path.read_text())
        document["keys"] = [k for k in document["keys"] if k["name"] != "reader"]
        keys.path.write_text(json.dumps(document))
        code, _ = await call(channel, path, [("x-api-key", keys.reader)])
        assert code == grpc.StatusCode.UNAUTHENTICATED

        keys.path.write_text("{ not json")  # a broken edit keeps the keys loaded
        assert (await call(channel, path, [("x-api-key", fresh)]))[0] == grpc.StatusCode.OK
        assert ring.reload_errors == 1


async def test_concurrent_calls_are_each_judged_by_their_own_credential(keys: Keys) -> None:
    """Calls in flight together on one connection, with a good key, a wrong
    key, a key without the scope and none, each get their own answer."""
    path = "/marketdata.v1.MarketDataService/GetPrice"
    feed = ScriptedFeed()
    credentials = [
        ([("x-api-key", keys.reader)], grpc.StatusCode.OK),
        ([("x-api-key", "cwk_" + "x" * 43)], grpc.StatusCode.UNAUTHENTICATED),
        ([("x-api-key", keys.lacking(METHOD_SCOPES[path]))], grpc.StatusCode.PERMISSION_DENIED),
        ([], grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", f"Bearer {keys.reader}")], grpc.StatusCode.OK),
    ]
    async with (
        # (no limit in the way: failed authentications are half of these calls)
        running(
            feed, api_keys_file=str(keys.path), auth_failures_per_minute=0, key_rate=1e6
        ) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        await _with_data(feed)
        plan = [credentials[i % len(credentials)] for i in range(200)]
        results = await asyncio.gather(*(call(channel, path, metadata) for metadata, _ in plan))
        assert [code for code, _ in results] == [expected for _, expected in plan]


async def test_failed_authentications_are_limited_per_address(keys: Keys) -> None:
    path = "/marketdata.v1.MarketDataService/ListSymbols"
    async with (
        running(
            ScriptedFeed(),
            api_keys_file=str(keys.path),
            auth_failures_per_minute=3,
            trusted_proxies="10.255.255.0/24",  # loopback is then a client like any other
        ) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        codes = [(await call(channel, path, [("x-api-key", f"guess{i}")]))[0] for i in range(4)]
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
        # Blocked: even a right key is not checked from this address for a while.
        code, _ = await call(channel, path, [("x-api-key", keys.reader)])
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_keys_create_prints_the_key_once_on_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    env = {**os.environ, "CANDLEWIRE_API_KEYS_FILE": str(path)}
    done = subprocess.run(
        [sys.executable, "-m", "candlewire", "keys", "create", "desk-fx"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    key = done.stdout.splitlines()[-1]
    assert key.startswith("cwk_") and len(key) > 40
    assert done.stdout.count(key) == 1
    stored = path.read_text()
    assert key not in stored
    entry = json.loads(stored)["keys"][0]
    assert entry["hash"] == hash_key(key)
    assert entry["scopes"] == ["read"]  # without --scopes: read everything
    assert path.stat().st_mode & 0o077 == 0

    scoped = subprocess.run(
        [sys.executable, "-m", "candlewire", "keys", "create", "charts", "--scopes", "candles"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert json.loads(path.read_text())["keys"][1]["scopes"] == ["candles"]
    assert scoped.stdout.splitlines()[-1] != key
    again = subprocess.run(
        [sys.executable, "-m", "candlewire", "keys", "create", "charts"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert again.returncode == 2 and "already exists" in again.stderr


async def test_the_quick_start_is_open_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with (
        running(ScriptedFeed()) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        code, _ = await call(channel, "/marketdata.v1.MarketDataService/ListSymbols")
        assert code == grpc.StatusCode.OK
    assert any("AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)
