"""Bearer JWTs verified against keys from a local JWKS server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from candlewire.api.auth import METHOD_SCOPES
from tests.scripted import ScriptedFeed, running
from tests.security.conftest import METHODS, Keys, call, error_reason

LIST = "/marketdata.v1.MarketDataService/ListSymbols"
CANDLES = "/marketdata.v1.MarketDataService/GetCandles"
ISSUER = "https://idp.example.test/"
AUDIENCE = "candlewire"


class Jwks:
    """An identity provider's JWKS endpoint on a free port; counts its requests."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.requests = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.requests += 1
                body = json.dumps({"keys": list(jwks.public().values())}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key

    def public(self) -> dict[str, Any]:
        out = {}
        for kid, key in self.keys.items():
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            out[kid] = {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}
        return out

    def token(self, kid: str, key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "desk-42",
            "iat": now,
            "exp": now + 300,
            "scope": "symbols prices",
            **claims,
        }
        signer = key if key is not None else self.keys[kid]
        return jwt.encode(payload, signer, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    provider = Jwks()
    provider.add("one")
    provider.thread.start()
    try:
        yield provider
    finally:
        provider.server.shutdown()
        provider.server.server_close()


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_jwts_are_verified_and_carry_their_scopes(jwks: Jwks, keys: Keys) -> None:
    settings = {
        "jwt_jwks_url": jwks.url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "api_keys_file": str(keys.path),
    }
    async with (
        running(ScriptedFeed(), **settings) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        good = jwks.token("one")
        for _ in range(3):
            assert (await call(channel, LIST, _bearer(good)))[0] == grpc.StatusCode.OK
        assert jwks.requests == 1  # the key set is cached
        code, status = await call(channel, CANDLES, _bearer(good))
        assert code == grpc.StatusCode.PERMISSION_DENIED  # no "candles" in its scope claim
        listed = jwks.token("one", scope=["candles"])  # scp-style lists work too
        assert (await call(channel, CANDLES, _bearer(listed)))[
            0
        ] != grpc.StatusCode.PERMISSION_DENIED

        expired = jwks.token("one", exp=int(time.time()) - 120)
        code, status = await call(channel, LIST, _bearer(expired))
        assert (code, error_reason(status)) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")

        forged = jwks.token(
            "one", key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        code, status = await call(channel, LIST, _bearer(forged))
        assert (code, error_reason(status)) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")

        for claims in ({"aud": "someone-else"}, {"iss": "https://evil.example.test/"}):
            code, _ = await call(channel, LIST, _bearer(jwks.token("one", **claims)))
            assert code == grpc.StatusCode.UNAUTHENTICATED, claims
        no_expiry = jwks.token("one", exp=None)
        assert (await call(channel, LIST, _bearer(no_expiry)))[0] == grpc.StatusCode.UNAUTHENTICATED

        # A token naming an unknown key id does not make us hammer the provider...
        ghost = jwks.token("ghost", key=jwks.keys["one"])
        assert (await call(channel, LIST, _bearer(ghost)))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert jwks.requests == 1
        # ... but once min_refetch has passed, a new key id fetches the set again.
        assert app.gatekeeper is not None and app.gatekeeper.authenticator.jwt is not None
        app.gatekeeper.authenticator.jwt.min_refetch = 0.0
        jwks.add("two")
        rotated = jwks.token("two")
        assert (await call(channel, LIST, _bearer(rotated)))[0] == grpc.StatusCode.OK
        assert jwks.requests == 2
        # API keys keep working beside JWTs.
        assert (await call(channel, LIST, [("x-api-key", keys.reader)]))[0] == grpc.StatusCode.OK


@pytest.mark.parametrize("path", sorted(METHODS))
async def test_each_method_refuses_expired_and_forged_tokens(jwks: Jwks, path: str) -> None:
    settings = {"jwt_jwks_url": jwks.url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    async with (
        running(ScriptedFeed(), **settings) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        expired = jwks.token("one", exp=int(time.time()) - 120, scope="read")
        forged = jwks.token("one", key=_other_key(), scope="read")
        for token in (expired, forged):
            assert (await call(channel, path, _bearer(token)))[0] == (
                grpc.StatusCode.UNAUTHENTICATED
            )
        unscoped = jwks.token("one", scope="nothing")
        assert (await call(channel, path, _bearer(unscoped)))[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        good = jwks.token("one", scope=METHOD_SCOPES[path])
        assert (await call(channel, path, _bearer(good)))[0] not in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )


_OTHER: list[rsa.RSAPrivateKey] = []


def _other_key() -> rsa.RSAPrivateKey:
    if not _OTHER:
        _OTHER.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _OTHER[0]
