"""TLS and mutual TLS on both faces, and certificate rotation under a connected client."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import grpc
import httpx
import pytest
import trustme

from candlewire.app import App
from tests.scripted import ScriptedFeed, running
from tests.security.conftest import call, grpc_web_frame, request_for

LIST = "/marketdata.v1.MarketDataService/ListSymbols"


def _write(cert: trustme.LeafCert, directory: Path) -> tuple[str, str]:
    """Write ``cert`` as the service's files (replaced atomically, as a rotation does)."""
    paths = []
    for name, blob in (("cert.pem", cert.cert_chain_pems[0]), ("key.pem", cert.private_key_pem)):
        temporary = directory / f".{name}.new"
        blob.write_to_path(str(temporary))
        temporary.replace(directory / name)
        paths.append(str(directory / name))
    return paths[0], paths[1]


def _channel(app: App, ca: trustme.CA, client: trustme.LeafCert | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=client.private_key_pem.bytes() if client else None,
        certificate_chain=client.cert_chain_pems[0].bytes() if client else None,
    )
    return grpc.aio.secure_channel(f"localhost:{app.port}", credentials)


def _http(ca: trustme.CA, client: trustme.LeafCert | None = None) -> httpx.AsyncClient:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client is not None:
        client.configure_cert(context)
    return httpx.AsyncClient(verify=context, timeout=10, http2=False)


async def _grpc_web(http: httpx.AsyncClient, app: App) -> str:
    assert app.gateway is not None
    response = await http.post(
        f"https://localhost:{app.gateway.port}{LIST}",
        content=grpc_web_frame(request_for(LIST)),
        headers={"content-type": "application/grpc-web+proto"},
    )
    assert response.status_code == 200
    return response.content.decode("latin-1")


async def test_tls_on_both_ports(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write(ca.issue_cert("localhost"), tmp_path)
    async with running(ScriptedFeed(), tls_cert_file=cert, tls_key_file=key) as app:
        async with _channel(app, ca) as channel:
            assert (await call(channel, LIST))[0] == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(f"localhost:{app.port}") as plain:
            assert (await call(plain, LIST))[0] == grpc.StatusCode.UNAVAILABLE
        async with _http(ca) as http:
            assert "grpc-status:0" in (await _grpc_web(http, app)).replace(" ", "")
        async with _http(trustme.CA()) as stranger:
            with pytest.raises(httpx.ConnectError):
                await _grpc_web(stranger, app)


async def test_mutual_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    ca, clients = trustme.CA(), trustme.CA()
    cert, key = _write(ca.issue_cert("localhost"), tmp_path)
    clients.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    client = clients.issue_cert("desk@example.com")
    outsider = trustme.CA().issue_cert("desk@example.com")
    async with running(
        ScriptedFeed(),
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=str(tmp_path / "clients.pem"),
    ) as app:
        async with _channel(app, ca) as anonymous:
            assert (await call(anonymous, LIST))[0] == grpc.StatusCode.UNAVAILABLE
        async with _channel(app, ca, outsider) as wrong:
            assert (await call(wrong, LIST))[0] == grpc.StatusCode.UNAVAILABLE
        async with _channel(app, ca, client) as channel:
            assert (await call(channel, LIST))[0] == grpc.StatusCode.OK
        async with _http(ca) as http:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                await _grpc_web(http, app)
        async with _http(ca, client) as http:
            assert "grpc-status:0" in (await _grpc_web(http, app)).replace(" ", "")


async def test_certificates_rotate_under_a_connected_client(tmp_path: Path) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    cert, key = _write(old_ca.issue_cert("localhost"), tmp_path)
    async with running(ScriptedFeed(), tls_cert_file=cert, tls_key_file=key) as app:
        assert app.tls is not None
        app.tls.check_interval = 0.0  # look at the files on every handshake
        async with _channel(app, old_ca) as connected, _http(old_ca) as browser:
            assert (await call(connected, LIST))[0] == grpc.StatusCode.OK
            await _grpc_web(browser, app)

            _write(new_ca.issue_cert("localhost"), tmp_path)  # the rotation

            async with _channel(app, new_ca) as fresh:
                assert (await call(fresh, LIST))[0] == grpc.StatusCode.OK
            assert app.tls.reloads == 1
            # The connected client is not cut: its connection keeps working.
            assert (await call(connected, LIST))[0] == grpc.StatusCode.OK
            async with _channel(app, old_ca) as stale:
                assert (await call(stale, LIST))[0] == grpc.StatusCode.UNAVAILABLE
            assert app.gateway is not None
            # The HTTP port respawns its worker on a rotation.
            await asyncio.wait_for(app.gateway.rotated.wait(), 20)
            assert app.gateway.certificate_reloads == 1
            async with _http(new_ca) as http:
                assert "grpc-status:0" in (await _grpc_web(http, app)).replace(" ", "")
            async with _http(old_ca) as http:
                with pytest.raises(httpx.ConnectError):
                    await _grpc_web(http, app)
