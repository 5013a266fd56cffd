"""The Redis store's Lua scripts, read from package data (``scripts/*.lua``).

Each script the store runs is one file of ``scripts/``, preceded by the
shared parts of ``scripts/lib/`` it names in :data:`SCRIPTS`: the write
guard (the dataset's epoch and the writer's lease; on Redis Cluster its
per-slot variant) and the helper functions of the read scripts. Redis runs
the concatenation, so a helper is a ``local function`` in the text before
the script that calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

__all__ = ["SCRIPTS", "Scripts", "load", "parts", "sources"]

SCRIPTS: dict[str, tuple[str, ...]] = {
    "write": ("lib/{guard}", "write"),
    "quote": ("lib/{guard}", "quote"),
    "acquire": ("acquire",),
    "renew": ("renew",),
    "range": ("lib/pack", "range"),
    "times": ("times",),
    "snapshot": ("lib/pack", "lib/trimmed", "snapshot"),
    "updates": ("lib/trimmed", "updates"),
    "follow": ("lib/trimmed", "follow"),
    "trades_write": ("lib/{guard}", "lib/timekey", "trades_write"),
    "trades_range": ("lib/timekey", "trades_range"),
    "rotate": ("rotate",),
    "rejections": ("rejections",),
}
"""Script name -> the files (under ``scripts/``, without ``.lua``) it is made
of, in order; ``{guard}`` is ``guard``, or ``guard_cluster`` on Redis Cluster."""


@dataclass(frozen=True, slots=True)
class Scripts:
    """The source of every script the store registers."""

    write: str
    quote: str
    acquire: str
    renew: str
    range: str
    times: str
    snapshot: str
    updates: str
    follow: str
    trades_write: str
    trades_range: str
    rotate: str
    rejections: str


def parts(name: str, *, cluster: bool) -> list[str]:
    """The files script ``name`` is made of, relative to ``scripts/``."""
    guard = "guard_cluster" if cluster else "guard"
    return [f"{part.format(guard=guard)}.lua" for part in SCRIPTS[name]]


def sources(*, cluster: bool) -> dict[str, str]:
    """Script name -> the text Redis runs, for one Redis or a Redis Cluster."""
    directory = files("candlewire.store.redis").joinpath("scripts")
    return {
        name: "".join(
            directory.joinpath(*part.split("/")).read_text(encoding="utf-8")
            for part in parts(name, cluster=cluster)
        )
        for name in SCRIPTS
    }


def load(*, cluster: bool) -> Scripts:
    """Every script's source, for one Redis (``cluster=False``) or a Redis Cluster."""
    return Scripts(**sources(cluster=cluster))
