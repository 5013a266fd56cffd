"""The public surface of candlewire_client: pinned names, docstrings, no server imports."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import candlewire_client

PUBLIC = [
    "DEFAULT_TARGET",
    "SERVICE_NAME",
    "AuthError",
    "BlockingCandleStream",
    "BlockingTradeStream",
    "CallCancelledError",
    "Candle",
    "CandleEvent",
    "CandleList",
    "CandleStream",
    "CandlewireClient",
    "CandlewireError",
    "Client",
    "ClientOptions",
    "ContinuityLost",
    "DeadlineExceededError",
    "Event",
    "FieldViolation",
    "FootprintCandle",
    "Health",
    "Heartbeat",
    "Interval",
    "IntervalLike",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "Price",
    "PriceLevel",
    "ReconnectCallback",
    "Rejection",
    "ResourceExhaustedError",
    "RetryPolicy",
    "Series",
    "SeriesLike",
    "ServerError",
    "Side",
    "SnapshotEnd",
    "Source",
    "SymbolInfo",
    "TimeLike",
    "Trade",
    "TradeEvent",
    "TradeList",
    "TradeStream",
    "TradeStreamEvent",
    "TradesContinuityLost",
    "UnavailableError",
    "VolumeProfile",
    "Watermark",
    "__version__",
]

PACKAGE_DIR = Path(candlewire_client.__file__).parent


def _modules() -> list[str]:
    return ["candlewire_client"] + [
        f"candlewire_client.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE_DIR)])
    ]


def test_public_names_are_pinned() -> None:
    assert candlewire_client.__all__ == PUBLIC
    for name in PUBLIC:
        assert hasattr(candlewire_client, name), name


def test_every_module_declares_all_and_a_docstring() -> None:
    for name in _modules():
        module = importlib.import_module(name)
        assert module.__doc__, name
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{name} has no __all__"
        for item in exported:
            assert hasattr(module, item), f"{name}.__all__ names missing {item}"


def test_every_public_class_and_function_is_documented() -> None:
    missing: list[str] = []
    for name in _modules():
        module = importlib.import_module(name)
        for item in module.__all__:
            value = getattr(module, item)
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            if not inspect.getdoc(value):
                missing.append(f"{name}.{item}")
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    if attr.startswith("_") or not (
                        inspect.isfunction(member) or isinstance(member, property | classmethod)
                    ):
                        continue
                    if not inspect.getdoc(member):
                        missing.append(f"{name}.{item}.{attr}")
    assert missing == []


def test_the_client_depends_on_no_server_internals() -> None:
    """No module imports ``candlewire`` (see test_standalone for what a run loads)."""
    for path in PACKAGE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert name.split(".")[0] != "candlewire", f"{path.name} imports {name}"


def test_pandas_is_not_imported_by_the_client() -> None:
    for path in PACKAGE_DIR.glob("*.py"):
        assert "import pandas" not in path.read_text(), path.name
