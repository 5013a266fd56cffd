"""JSON logs and the RPC access log, from the command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from candlewire.api.keys import add_key
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_json_access_log_names_the_key_never_the_secret(tmp_path: Path) -> None:
    key = add_key(tmp_path / "keys.json", "desk-fx")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")}
    env.update(
        CANDLEWIRE_LOG_FORMAT="json",
        CANDLEWIRE_ACCESS_LOG="true",
        CANDLEWIRE_API_KEYS_FILE=str(tmp_path / "keys.json"),
        CANDLEWIRE_SIM_HISTORY="5",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "candlewire",
            "serve",
            "--grpc-listen",
            f"127.0.0.1:{port}",
            "--http-listen",
            "",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            stub.ListSymbols(pb.ListSymbolsRequest(), metadata=(("x-api-key", key),), timeout=10)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListSymbols(pb.ListSymbolsRequest(), metadata=(("x-api-key", "x"),))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "candlewire.access"]
    assert [(r["rpc_code"], r["principal"]) for r in access] == [
        ("OK", "desk-fx"),
        ("UNAUTHENTICATED", None),
    ]
    assert all(r["rpc_method"] == "/marketdata.v1.MarketDataService/ListSymbols" for r in access)
    assert key not in stderr
    assert any(r["message"] == "stopped" for r in records)
