"""Logging set-up: text or JSON lines (``CANDLEWIRE_LOG_FORMAT``), and the access log.

In JSON every record is one object with ``time``, ``level``, ``logger`` and
``message``, plus the fields a record carries: the access log
(``candlewire.access``, one record per RPC when ``CANDLEWIRE_ACCESS_LOG`` is
on) adds ``rpc_method``, ``rpc_code``, ``duration_ms``, ``principal`` (a
key's name or a token's subject, never a secret) and ``client``.
"""

from __future__ import annotations

import logging

__all__ = ["setup_logging"]

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger once, for the command line."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
