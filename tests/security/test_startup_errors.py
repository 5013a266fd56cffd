"""Start-up failures: one line naming the setting, exit status 2, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _serve(*flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")}
    return subprocess.run(
        [sys.executable, "-m", "candlewire", "serve", "--sim-history", "0", *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _assert_one_line(done: subprocess.CompletedProcess[str], setting: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("candlewire:")]
    assert len(ours) == 1, done.stderr
    assert setting in ours[0]


def test_grpc_port_in_use(busy_port: int) -> None:
    done = _serve("--grpc-listen", f"127.0.0.1:{busy_port}", "--http-listen", "")
    _assert_one_line(done, "CANDLEWIRE_GRPC_LISTEN")
    assert "add_port" not in done.stderr  # refused before gRPC tries (and logs) it


def test_http_port_in_use(busy_port: int) -> None:
    done = _serve("--grpc-listen", "127.0.0.1:0", "--http-listen", f"127.0.0.1:{busy_port}")
    _assert_one_line(done, "CANDLEWIRE_HTTP_LISTEN")


def test_metrics_port_in_use(busy_port: int) -> None:
    done = _serve(
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "",
        "--metrics-listen",
        f"127.0.0.1:{busy_port}",
    )
    _assert_one_line(done, "CANDLEWIRE_METRICS_LISTEN")


@pytest.mark.parametrize("content", [None, "{ not json", '{"keys": [{"name": "x"}]}', "dir"])
def test_unusable_keys_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "keys.json"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    done = _serve("--grpc-listen", "127.0.0.1:0", "--api-keys-file", str(path))
    _assert_one_line(done, "CANDLEWIRE_API_KEYS_FILE")


def test_unreadable_or_mismatched_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    one, two = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    one.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    two.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    base = ("--grpc-listen", "127.0.0.1:0", "--http-listen", "")
    missing = _serve(
        *base,
        "--tls-cert-file",
        str(tmp_path / "absent.pem"),
        "--tls-key-file",
        str(tmp_path / "other.key"),
    )
    _assert_one_line(missing, "CANDLEWIRE_TLS_CERT_FILE")
    mismatched = _serve(
        *base,
        "--tls-cert-file",
        str(tmp_path / "cert.pem"),
        "--tls-key-file",
        str(tmp_path / "other.key"),
    )
    _assert_one_line(mismatched, "CANDLEWIRE_TLS_KEY_FILE")
    no_key = _serve(*base, "--tls-cert-file", str(tmp_path / "cert.pem"))
    _assert_one_line(no_key, "CANDLEWIRE_TLS_KEY_FILE")


@pytest.mark.parametrize(
    ("flag", "value", "setting"),
    [
        ("--ip-rate", "-1", "CANDLEWIRE_IP_RATE"),
        ("--anonymous-scopes", "prices,everything", "CANDLEWIRE_ANONYMOUS_SCOPES"),
        ("--trusted-proxies", "not-a-network", "CANDLEWIRE_TRUSTED_PROXIES"),
        ("--jwt-jwks-url", "ftp://idp/jwks", "CANDLEWIRE_JWT_JWKS_URL"),
        ("--log-format", "xml", "CANDLEWIRE_LOG_FORMAT"),
    ],
)
def test_invalid_security_settings(flag: str, value: str, setting: str) -> None:
    _assert_one_line(_serve(flag, value), setting)
